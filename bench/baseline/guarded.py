"""The guarded baseline: plain Celery set up by a careful team for Taskplane's guarantees.

The same app as ``app.py`` beside it (the same two jobs and endpoints), with
every setting a team would reach for to not lose a job, and nothing else:

- ``task_acks_late`` and ``task_reject_on_worker_lost``: a job is acked after it
  ran, and a pool child killed mid-job returns its message;
- ``broker_transport_options={"confirm_publish": True}``: each publish (the
  job and its ``task-sent`` event) waits for RabbitMQ's confirm;
- its queue is a durable quorum queue (replicated, fsynced before the
  confirm), declared with ``x-queue-type`` so that Celery's
  ``worker_detect_quorum_queues`` (on by default) turns global QoS off;
  messages are persistent (Celery's default, spelled out);
- ``worker_send_task_events``, ``task_send_sent_event`` and
  ``task_track_started``: the events Flower needs and a STARTED state;
- results in Redis (the result backend), as the plain baseline.

Everything else is Celery's default, including prefetch multiplier 4. Served
with the plain baseline's gunicorn settings and run the same way:
``celery -A bench.baseline.guarded worker -c 2``.
"""

from kombu import Exchange, Queue

from bench.baseline.app import build

celery, web = build(  # "web", not "app": see app.py
    "guarded",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    broker_transport_options={"confirm_publish": True},
    # Celery's default queue ("celery" on the direct exchange "celery"), as a quorum queue.
    task_queues=(
        Queue(
            "celery",
            Exchange("celery"),
            routing_key="celery",
            queue_arguments={"x-queue-type": "quorum"},
        ),
    ),
    task_default_delivery_mode="persistent",
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
)
