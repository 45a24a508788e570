"""The scheduler that ``celery -A tasks beat`` runs: a leader lease and fire passes."""
