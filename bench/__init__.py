"""Taskplane's benchmark: ``make bench`` (``bench/run.sh``) runs it; pytest never does.

The ceiling (raw AMQP with pika), a minimal Flask + Celery baseline and
Taskplane itself are measured in one run on the local RabbitMQ and Redis, so
their ratios hold on a noisy machine. ``bench/report.py`` holds the pure parts
(parsing, percentiles, targets, the table); ``bench/run.py`` drives the run.
"""
