"""The minimal Flask + Celery app a user would write: the benchmark's baseline."""
