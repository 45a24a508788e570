#!/usr/bin/env bash
# Container healthcheck for a worker: does this host's worker node answer a ping?
# Usage: scripts/worker-healthcheck.sh [node-name]   (default: worker@$(hostname))
set -o errexit -o nounset -o pipefail
node="${1:-worker@$(hostname)}"
exec celery -A tasks inspect ping -d "$node" --timeout "${HEALTHCHECK_TIMEOUT:-5}"
