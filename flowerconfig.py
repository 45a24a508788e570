"""Flower settings, read by ``celery -A tasks flower`` from the working directory.

Loopback by default: Flower leaves /metrics and /healthcheck open even with
basic auth. The management API gives the Broker tab its queue lengths.
"""

import os

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("FLOWER_PORT", "5555"))
broker_api = os.environ.get("FLOWER_BROKER_API", "http://guest:guest@127.0.0.1:15672/api/")
# "user:password[,user2:password2]"; required in production.
if os.environ.get("FLOWER_BASIC_AUTH"):
    basic_auth = os.environ["FLOWER_BASIC_AUTH"].split(",")
elif os.environ.get("TASKPLANE_ENV", "development") == "production":
    # Flower can revoke tasks and shut down workers: never open in production.
    raise SystemExit("production refuses to start Flower without FLOWER_BASIC_AUTH=user:password")
else:
    # Development on loopback without credentials: let the REST API answer too.
    unauthenticated_api = True
# Keep the most recent tasks in memory for the Tasks view; no local state files.
max_tasks = 10_000
persistent = False
# Task runtime histogram buckets (seconds, floats as Flower requires): the
# defaults stop at 10 s, too short for the p99 alert in deploy/prometheus.
task_runtime_metric_buckets = [0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
# Forget workers gone for 10 minutes, so a retired worker stops counting as "gone".
purge_offline_workers = 600
