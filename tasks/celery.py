"""The one-line entry module: ``celery -A tasks worker|flower|inspect|...``."""

from tasks.factory import create_celery_app

app = create_celery_app()
