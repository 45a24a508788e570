# Taskplane's entry points. Each target sets up what it needs first, so a
# fresh clone needs nothing but Python 3.11+ (and root on Debian/Ubuntu to
# install RabbitMQ and Redis when they are not already reachable).
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help setup services run test test-unit chaos bench lint lock

help:
	@echo "make run    set up everything, then run web + worker + beat + Flower + SMTP sink"
	@echo "make test   set up everything, then run the test suite (chaos scenarios at CI size)"
	@echo "make chaos  the chaos scenarios at full size (2,500 jobs each, 10,000 in all)"
	@echo "make bench  Taskplane vs a plain Flask + Celery app vs raw AMQP, side by side"

setup:
	@scripts/bootstrap-venv.sh

services: setup
	@scripts/ensure-services.sh

run: services
	@echo "Taskplane API  http://127.0.0.1:8000  (try /job-types, /openapi.json)"
	@echo "Flower         http://127.0.0.1:5555"
	@echo "RabbitMQ UI    http://127.0.0.1:15672 (guest/guest)"
	@echo "SMTP sink      127.0.0.1:$${SMTP_PORT:-8025} (mail is printed below by 'smtp')"
	@echo "HTTP sink      http://127.0.0.1:8026 (webhook target; GET /sample.log)"
	@exec honcho start -f Procfile

test: services
	@scripts/ensure-test-tools.sh
	@pytest

# The chaos scenarios at full size, on a RabbitMQ node and a Redis of their own.
chaos: services
	@scripts/ensure-test-tools.sh
	@CHAOS_JOBS=$${CHAOS_JOBS:-2500} pytest -m chaos tests/chaos

# The benchmark (bench/README in the main README); BENCH_ARGS=--quick for a smoke run.
bench: services
	@bench/run.sh $${BENCH_ARGS:-}

# Unit tests only: no services needed.
test-unit: setup
	@pytest tests/unit

# Style, formatting, and the layering contracts of pyproject.toml ([tool.importlinter]).
lint: setup
	@ruff check . && ruff format --check . && lint-imports

# Re-pin after changing pyproject.toml (needs uv: pip install uv). The runtime
# lock goes into images; the dev lock adds test tools with the same pins.
lock:
	uv pip compile pyproject.toml --python-version 3.11 -o requirements.lock
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -c requirements.lock \
		-o requirements-dev.lock
