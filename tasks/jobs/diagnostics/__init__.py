"""diagnostics.*: jobs that exercise the platform itself (tests, chaos runs, benchmarks)."""
