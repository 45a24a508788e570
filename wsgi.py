"""The one-line entry module: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from app import create_app

app = create_app(configure_logs=True)
