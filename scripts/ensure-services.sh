#!/usr/bin/env bash
# Makes sure RabbitMQ and Redis answer where Taskplane will look for them.
#
# With CELERY_BROKER_URL / CELERY_RESULT_BACKEND pointing somewhere else, only
# waits for those and installs nothing. Otherwise, on Debian/Ubuntu as root,
# installs rabbitmq-server and redis-server with apt-get where missing and
# starts them as daemons (no systemd needed); as another user, prints the
# exact commands and stops. Safe to run again: running services are left alone.
set -o errexit -o nounset -o pipefail

DEFAULT_BROKER="amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_BACKEND="redis://127.0.0.1:6379/0"
BROKER_URL="${CELERY_BROKER_URL:-$DEFAULT_BROKER}"
BACKEND_URL="${CELERY_RESULT_BACKEND:-$DEFAULT_BACKEND}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '[services] %s\n' "$*"; }

# host and port from a URL like scheme://user:pass@host:port/path
host_of() { local rest="${1#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"; echo "${rest%%:*}"; }
port_of() {
  local rest="${1#*://}"; rest="${rest##*@}"; rest="${rest%%/*}"
  if [[ "$rest" == *:* ]]; then echo "${rest##*:}"; else echo "$2"; fi
}
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() {  # name host port seconds
  local i
  for ((i = 0; i < $4 * 5; i++)); do
    reachable "$2" "$3" && { say "$1 answers on $2:$3"; return 0; }
    sleep 0.2
  done
  say "$1 did not answer on $2:$3 within $4 s"; return 1
}

can_install() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]} with apt-get"
  # Debian's service scripts try to start daemons at install; without systemd
  # that fails harmlessly, and we start them ourselves below.
  if [[ ! -f /var/lib/apt/periodic/update-success-stamp ]] || ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    apt-get update -q
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

explain_and_stop() {
  cat <<TXT
[services] $1 is not reachable and this user cannot install it. As root, run:
    apt-get update && apt-get install -y rabbitmq-server redis-server
    install -m 644 $HERE/deploy/rabbitmq/taskplane.conf /etc/rabbitmq/conf.d/90-taskplane.conf
    rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_prometheus
    rabbitmq-server -detached
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/redis --appendonly yes
or point CELERY_BROKER_URL / CELERY_RESULT_BACKEND at running servers.
TXT
  exit 1
}

start_rabbitmq() {
  apt_install rabbitmq-server
  install -d /etc/rabbitmq/conf.d
  install -m 644 "$HERE/deploy/rabbitmq/taskplane.conf" /etc/rabbitmq/conf.d/90-taskplane.conf
  rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_prometheus >/dev/null
  say "starting rabbitmq-server"
  rabbitmq-server -detached
  wait_for RabbitMQ 127.0.0.1 5672 90 || {
    say "RabbitMQ did not come up: see /var/log/rabbitmq/ or run 'rabbitmq-server' in the foreground"
    return 1
  }
}

start_redis() {
  apt_install redis-server
  install -d -o redis -g redis /var/lib/redis 2>/dev/null || install -d /var/lib/redis
  say "starting redis-server"
  # appendonly: job records survive a Redis restart (fsync every second).
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/redis \
    --appendonly yes --appendfsync everysec --logfile /var/log/redis-taskplane.log
}

ensure() {  # name url default_url default_port starter
  local name=$1 url=$2 default=$3 port host
  host=$(host_of "$url"); port=$(port_of "$url" "$4")
  if reachable "$host" "$port"; then say "$name answers on $host:$port"; return 0; fi
  if [[ "$url" != "$default" ]]; then
    say "$name is configured at $host:$port (not the local default): waiting, installing nothing"
    wait_for "$name" "$host" "$port" 30; return
  fi
  can_install || explain_and_stop "$name"
  "$5"
  wait_for "$name" "$host" "$port" 90
}

ensure RabbitMQ "$BROKER_URL" "$DEFAULT_BROKER" 5672 start_rabbitmq
ensure Redis "$BACKEND_URL" "$DEFAULT_BACKEND" 6379 start_redis
