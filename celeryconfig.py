"""Base Celery settings for every environment.

Celery loads this module first; ``config/<environment>.py`` overrides what
differs. Every setting that matters is written down with the reason we chose
it, so nobody has to remember a default. Secrets only come from the
environment. Reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

import json
import os

# -- Where things are -------------------------------------------------------
# Celery's own environment variable names, so the CLI and Flower agree.
broker_url = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Job records, results and small platform state live in this Redis.
result_backend = os.environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0")

# -- Wire format ------------------------------------------------------------
# JSON only, everywhere: a serializer that can encode objects would let any
# producer run code on a worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
event_serializer = "json"

# -- Publishing -------------------------------------------------------------
# A 202 means RabbitMQ confirmed the message: wait for publisher confirms.
broker_transport_options = {"confirm_publish": True}
# Messages survive a broker restart.
task_default_delivery_mode = "persistent"
# Fail fast when the broker is gone: the web answers 503 instead of hanging.
broker_connection_timeout = 3.0
task_publish_retry = True
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.25,
    "interval_max": 0.5,
}
# Workers keep retrying the broker forever after an outage, with backoff.
broker_connection_retry = True
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
broker_heartbeat = 30

# -- Consuming ---------------------------------------------------------------
# Ack after the job returns, so a worker lost mid-job leaves the message queued.
task_acks_late = True
# ...and a pool child killed mid-job returns its message instead of acking it.
task_reject_on_worker_lost = True
# A failed or timed-out job is rejected, not acked, so the queue's dead-letter
# exchange keeps it (Celery 5.7 splits the old task_acks_on_failure_or_timeout).
task_acks_on_failure = False
task_acks_on_timeout = False
# One unacked message per process: long jobs never hide short ones behind them.
worker_prefetch_multiplier = 1
# Quorum queues do not support global QoS; Celery switches it off for them.
worker_detect_quorum_queues = True
# A worker that loses the broker lets running late-ack jobs be redelivered
# rather than finishing them and failing to ack (celery#3430).
worker_cancel_long_running_tasks_on_connection_loss = True
# Routing is declared, never guessed: an unknown queue name is an error.
task_create_missing_queues = False
# Warm shutdown waits for running jobs at most this long, then returns them.
worker_soft_shutdown_timeout = 30.0
worker_enable_soft_shutdown_on_idle = True
# Malformed or undecodable messages are dead-lettered, not dropped or fatal.
worker_consumer = "tasks.runtime.consumer:TaskplaneConsumer"
# Keep our log configuration; Celery must not replace the root logger.
worker_hijack_root_logger = False
worker_redirect_stdouts = False
# Recycle pool children now and then so slow leaks in job code stay bounded.
worker_max_tasks_per_child = 10_000

# -- States and results ------------------------------------------------------
# The STARTED state is reported to Flower and the event stream.
task_track_started = True
# Taskplane's own job record in Redis is the single source of truth for state
# and results (it knows "never submitted" from "queued", which Celery's
# PENDING cannot). Celery's result meta would be a second, weaker copy.
task_ignore_result = True
# Results and finished job records expire after a week.
result_expires = 7 * 24 * 3600
# Retention per job type, in seconds, where it differs from result_expires:
# a finished job's record and its search-index entries go together after it
# (dead-lettered jobs stay until replayed or purged). As JSON in
# TASKPLANE_RETENTION_S, e.g. {"diagnostics.echo": 3600, "email.send": 2592000}.
taskplane_retention_s = json.loads(os.environ.get("TASKPLANE_RETENTION_S") or "{}")
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}

# -- Events for Flower --------------------------------------------------------
worker_send_task_events = True
task_send_sent_event = True

# -- Time --------------------------------------------------------------------
enable_utc = True
timezone = "UTC"

# -- Taskplane's own settings (lowercase, taskplane_ prefix) ------------------
# Job families enabled in this environment; production drops diagnostics.
taskplane_job_families = ["webhooks", "email", "logs", "diagnostics"]
# Multiplies every retry backoff; the testing environment shrinks it.
taskplane_backoff_scale = 1.0
# Deliveries of one message before RabbitMQ dead-letters it (a job that keeps
# killing its worker stops here instead of looping forever).
taskplane_delivery_limit = 5
# Outbound mail for email.send.
taskplane_smtp_host = os.environ.get("SMTP_HOST", "127.0.0.1")
taskplane_smtp_port = int(os.environ.get("SMTP_PORT", "8025"))
taskplane_mail_from = os.environ.get("TASKPLANE_MAIL_FROM", "taskplane@example.com")
# How long the web waits for RabbitMQ to confirm a job's message before it
# answers 503 (a batch of n jobs gets n/50 s more). Quorum queues confirm once
# a majority fsynced the message.
taskplane_confirm_timeout_s = float(os.environ.get("TASKPLANE_CONFIRM_TIMEOUT_S", "3"))
# Every Redis call of the web ends within this many seconds (a frozen Redis
# costs a request at most this, then 503); workers wait longer and retry.
taskplane_redis_timeout_s = float(os.environ.get("TASKPLANE_REDIS_TIMEOUT_S", "1"))
# GET /jobs/<id>?wait_s=N: how many requests of one web process may wait for
# a job at once (each holds a thread; gunicorn.conf.py adds this many threads to
# WEB_THREADS, so submissions keep theirs). Past it a wait answers at once.
# 0 turns waiting off.
taskplane_wait_slots = int(os.environ.get("TASKPLANE_WAIT_SLOTS", "64"))
# The longest a wait lasts, in seconds: wait_s up to 30 is accepted and waits at
# most this (lower it below a proxy's idle timeout, or for fuzzing).
taskplane_wait_max_s = float(os.environ.get("TASKPLANE_WAIT_MAX_S", "30"))
# A worker publishing a job's retry waits this long for the confirm (through a
# blocked broker too); past it, the job's message goes back to its queue.
taskplane_retry_publish_timeout_s = float(os.environ.get("TASKPLANE_RETRY_PUBLISH_TIMEOUT_S", "30"))
# A job's claim on its side effect (webhook delivered, mail sent) lasts this
# long unless the run performing it extends it, which it does every third of
# it: after a worker is killed mid-effect, the job's rerun acts this much later.
taskplane_effect_lease_s = 30
# How long an Idempotency-Key keeps returning the job it first created.
taskplane_idempotency_ttl_s = 24 * 3600
# Signs completion callbacks (X-Taskplane-Signature, HMAC-SHA256). Unset:
# development and testing sign with a fixed, public secret; production
# refuses jobs that name a callback_url (tasks/core/callbacks.py).
taskplane_callback_secret = os.environ.get("TASKPLANE_CALLBACK_SECRET", "")
# Log lines as JSON (production always; elsewhere with TASKPLANE_LOG_JSON=1).
taskplane_log_json = os.environ.get("TASKPLANE_LOG_JSON", "") == "1"
# RabbitMQ's management API: queue depths and consumer counts for /queues and
# /metrics. Defaults to the broker's host, credentials and vhost on port 15672.
taskplane_management_url = os.environ.get("RABBITMQ_MANAGEMENT_URL", "")
# /health/ready caches each component check this long, so a probe storm does
# not hammer the broker; each check gets at most the timeout.
taskplane_health_cache_s = float(os.environ.get("TASKPLANE_HEALTH_CACHE_S", "2"))
taskplane_health_timeout_s = 0.8
# Per-queue consumer switches for this environment: whether workers consume
# the queue ("enabled"), the worker group that runs it (its pool and
# concurrency, below) and its retry budget ("max_attempts", overriding the job
# types' own). Paused/resumed at run time through POST /queues/<q>/pause.
taskplane_queues = {
    "webhooks": {"enabled": True, "group": "io", "max_attempts": None},
    "email": {"enabled": True, "group": "io", "max_attempts": None},
    "logs": {"enabled": True, "group": "cpu", "max_attempts": None},
    "diagnostics": {"enabled": True, "group": "short", "max_attempts": None},
}
# Worker groups: a worker started with TASKPLANE_WORKER_GROUP=<name> consumes
# only its group's queues, with its pool, concurrency and prefetch. Outbound
# HTTP and SMTP wait on the network, so many threads; log work uses CPU, so
# processes. "prefetch_multiplier" is how many messages each process (thread)
# reserves: 1 where jobs can be long, so a long job never sits on messages an
# idle worker could run; 4 for short jobs, so a process never waits for the
# broker between them (a prefork worker drains short jobs ~40% faster, README
# "Benchmark"). A worker that dies returns what it reserved, and each such
# message counts one delivery against taskplane_delivery_limit.
# "processes" is how many worker processes of the group a host runs (None:
# one per CPU). A threads pool runs its jobs' Python under one GIL, so the io
# group runs one process per CPU with 16 threads each, as Sidekiq runs one
# process per core; a prefork group is one process whose pool has a child per
# CPU. The bench starts the groups this way (README "Scaling out").
# Without TASKPLANE_WORKER_GROUP a worker consumes every enabled queue, with
# worker_prefetch_multiplier (1).
taskplane_worker_groups = {
    "io": {"pool": "threads", "concurrency": 16, "prefetch_multiplier": 1, "processes": None},
    # concurrency None: one pool child per CPU
    "cpu": {"pool": "prefork", "concurrency": None, "prefetch_multiplier": 1, "processes": 1},
    "short": {"pool": "prefork", "concurrency": None, "prefetch_multiplier": 4, "processes": 1},
}
# Rate limits (Flask-Limiter syntax), per API token across all web processes,
# and per token and job type on POST /jobs. Unset (the default outside
# production): no limiter at all, and no Redis round trips for it.
taskplane_rate_limits = {
    "per_token": os.environ.get("TASKPLANE_RATE_LIMIT_PER_TOKEN") or None,
    "per_job_type": {"default": os.environ.get("TASKPLANE_RATE_LIMIT_PER_JOB_TYPE") or None},
}
# Where webhook.deliver and logs.summarize may connect (anti-SSRF). Outside
# production, loopback and private networks are allowed so local examples work.
taskplane_url_policy = {"deny_private": False, "allow": [], "deny": []}

# -- Schedules (celery -A tasks beat; README "Schedules") ---------------------
# Beat runs Taskplane's scheduler: schedules are data in Redis, fired by the
# leader of any number of beat processes (tasks/scheduler/beat.py).
beat_scheduler = "tasks.scheduler.beat:TaskplaneScheduler"
# The leader lease: a killed leader is replaced within lease_s + renew_s.
taskplane_scheduler_lease_s = float(os.environ.get("TASKPLANE_SCHEDULER_LEASE_S", "10"))
taskplane_scheduler_renew_s = float(os.environ.get("TASKPLANE_SCHEDULER_RENEW_S", "1"))
# A fire later than this (no scheduler ran in time) is "missed": the schedule's
# missed policy decides whether it still fires; "all" fires at most catch_up_limit.
taskplane_scheduler_grace_s = float(os.environ.get("TASKPLANE_SCHEDULER_GRACE_S", "2"))
taskplane_scheduler_catch_up_limit = 100
# Schedules declared for this environment, applied when a scheduler starts
# (created, changed when their declaration changes, removed when no longer
# declared). JSON values only; TASKPLANE_SCHEDULES_FILE (a JSON list) replaces them.
taskplane_schedules: list[dict] = []
if os.environ.get("TASKPLANE_SCHEDULES_FILE"):
    import json as _json

    with open(os.environ["TASKPLANE_SCHEDULES_FILE"], encoding="utf-8") as _file:
        taskplane_schedules = _json.load(_file)
