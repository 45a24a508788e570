"""gunicorn settings for the baseline: Taskplane's own serving settings, its app aside.

Reads the repository's gunicorn.conf.py and keeps
what decides throughput (worker class, processes, threads, keep-alive,
timeouts), so the baseline and Taskplane differ only in the app they serve.
The benchmark sets PROMETHEUS_MULTIPROC_DIR, so reading it creates nothing.
"""

import os
from pathlib import Path
from runpy import run_path

_taskplane = run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))

bind = [os.environ["BENCH_BIND"]]
worker_class = _taskplane["worker_class"]
workers = _taskplane["workers"]
threads = _taskplane["threads"]
keepalive = _taskplane["keepalive"]
timeout = _taskplane["timeout"]
graceful_timeout = _taskplane["graceful_timeout"]
preload_app = _taskplane.get("preload_app", False)
accesslog = None
errorlog = "-"
loglevel = "info"
control_socket_disable = _taskplane.get("control_socket_disable", True)
