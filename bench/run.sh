#!/usr/bin/env bash
# The benchmark (make bench): ceiling, baseline and Taskplane in one run on the
# local RabbitMQ and Redis. Needs wrk for HTTP load: installed here with
# apt-get when missing and we are root; otherwise a Python load generator is
# used, with a warning. Arguments go to bench/run.py (--quick, --jobs N).
set -o errexit -o nounset -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"

say() { printf '[bench] %s\n' "$*"; }

if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing wrk with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q wrk >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
      || say "WARNING: could not install wrk; falling back to the Python load generator"
  else
    say "WARNING: wrk is missing and cannot be installed here (needs root and apt-get)."
    say "WARNING: falling back to the Python load generator; install wrk for real numbers."
  fi
fi

exec "$HERE/.venv/bin/python" -m bench.run "$@"
