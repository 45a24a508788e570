"""The worker runtime: how a job runs (task shell, effects, consumer, death watcher, switches)."""
