"""gunicorn settings for the web process (https://docs.gunicorn.org/en/stable/settings.html)."""

import ctypes
import importlib
import os
import signal

from config import config_module

# Loopback unless told otherwise: containers set TASKPLANE_BIND=0.0.0.0:8000.
bind = [os.environ.get("TASKPLANE_BIND", "127.0.0.1:8000")]
# glibc gives threads that allocate their own malloc arenas (up to 8 per core),
# and with WEB_THREADS plus the wait slots' threads memory fragments across
# them: the web's RSS grew by a quarter. Two arenas, set here in the master
# before it forks the workers, which inherit the allocator's settings.
M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)
try:
    ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(os.environ.get("MALLOC_ARENA_MAX", "2")))
except OSError:  # not glibc: its allocator has no per-thread arenas to cap
    pass

# Threads overlap the wait for publisher confirms; two processes use both cores.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# WEB_THREADS serve requests; each of the taskplane_wait_slots (TASKPLANE_WAIT_SLOTS)
# gets a thread on top, since a GET /jobs/<id>?wait_s=N holds its thread while it
# waits: with every slot taken, submissions still have WEB_THREADS threads. Read
# from the environment's config module, the one the app reads (app/waits.py).
threads = int(os.environ.get("WEB_THREADS", "4")) + max(
    0, int(importlib.import_module(config_module()).taskplane_wait_slots)
)
# 30 s covers a broker that answers slowly (and a job wait: SIGTERM ends those
# at once, see post_worker_init).
timeout = 30
# SIGTERM: stop accepting, finish in-flight requests for up to this long.
graceful_timeout = 30
keepalive = 5
# Bounded request heads, so a hostile client cannot make us buffer much.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Each worker opens its own broker and Redis connections after the fork.
preload_app = False
# The app logs each request itself, with its request and trace ids.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
# gunicorn 24+ opens a control socket in $HOME by default; several gunicorns on
# one host (tests, blue/green) would fight over it, and we do not use it.
control_socket_disable = True


# Prometheus multiprocess mode: each worker writes its samples to files in
# this (per-host, per-start) directory and /metrics merges them.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskplane-metrics-")


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """A dead worker's live gauges must not linger in the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):  # noqa: ANN001, ANN201 - gunicorn hook signature
    """SIGTERM also ends the worker's job waits at once (app/waits.py), so a
    stopping worker answers its waiters instead of holding them (and itself) for
    up to graceful_timeout."""
    previous = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):  # noqa: ANN001, ANN202 - signal handler signature
        from app.waits import stop_waits

        stop_waits(worker.wsgi)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it
