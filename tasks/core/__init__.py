"""The platform core, shared by web and workers: what a job is, how it enters, where it lives."""
