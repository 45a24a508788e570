# Taskplane image: one image for every process (web, worker, flower).
# The command picks the process; the default is the web server.
#
#   docker build -t taskplane .
#   docker run --env-file .env -p 127.0.0.1:8000:8000 taskplane
#   docker run --env-file .env taskplane celery -A tasks worker --loglevel=INFO -n worker@%h
#   docker run --env-file .env taskplane celery -A tasks flower

# ---------------------------------------------------------------------------
# Builder: compilers live here only. Dependencies go into a venv that is
# copied whole into the runtime stage (same base image, same Python path).
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# Only the pinned lock file: the project itself is not installed, its code
# runs from /app with PYTHONPATH=/app.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# ---------------------------------------------------------------------------
# Runtime: no compilers, no root.
# ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    TASKPLANE_BIND=0.0.0.0:8000

# Fixed uid/gid so volumes and `user: "10001:10001"` in compose line up.
RUN groupadd --system --gid 10001 taskplane \
    && useradd --system --uid 10001 --gid 10001 \
       --home-dir /home/taskplane --create-home --shell /usr/sbin/nologin taskplane

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Source stays owned by root: the service user can read it, not change it.
COPY app/ ./app/
COPY tasks/ ./tasks/
COPY config/ ./config/
COPY scripts/ ./scripts/
COPY celeryconfig.py wsgi.py gunicorn.conf.py flowerconfig.py Procfile ./

USER 10001:10001

EXPOSE 8000

# curl is not in the slim image; Python's urllib is. Worker and flower
# containers override this in docker-compose.yml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
