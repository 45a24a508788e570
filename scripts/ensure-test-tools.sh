#!/usr/bin/env bash
# Installs the tools that only the tests need, from Debian's packages:
#   promtool  (package prometheus)  checks and unit-tests deploy/prometheus/
#   chromium  (package chromium)    drives the browser tests
#
# A tool whose command is already on PATH is left alone. As root with apt-get,
# installs the missing packages (apt-get update first, once, only when one is
# missing). As another user, prints the exact command and exits 0: the tests
# that need a missing tool then skip and say why. Safe to run again.
#
# Debian's prometheus package would start a Prometheus server at install. We
# only want promtool: service starts are refused during the install, and any
# prometheus server that appears all the same is stopped again (by its pid).
set -o errexit -o nounset -o pipefail

say() { printf '[tools] %s\n' "$*"; }

# command package
TOOLS=(
  "promtool prometheus"
  "chromium chromium"
)

missing_pkgs=()
for entry in "${TOOLS[@]}"; do
  read -r cmd pkg <<<"$entry"
  command -v "$cmd" >/dev/null 2>&1 || missing_pkgs+=("$pkg")
done

version_of() {  # command -> one line
  case "$1" in
    promtool) promtool --version 2>&1 | head -n 1 ;;
    chromium) chromium --version 2>/dev/null | head -n 1 ;;
  esac
}

report() {
  local line="" entry cmd pkg path
  for entry in "${TOOLS[@]}"; do
    read -r cmd pkg <<<"$entry"
    [[ -n "$line" ]] && line+="; "
    if path=$(command -v "$cmd" 2>/dev/null); then
      line+="$cmd at $path ($(version_of "$cmd"))"
    else
      line+="$cmd missing (package $pkg)"
    fi
  done
  say "$line"
}

if ((${#missing_pkgs[@]} == 0)); then
  report
  exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  say "missing ${missing_pkgs[*]}; tests that need them will skip. As root on Debian/Ubuntu, run:"
  echo "    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${missing_pkgs[*]}"
  exit 0
fi

# Prometheus servers running before the install are not ours to touch.
before_pids=" $( (pgrep -x prometheus 2>/dev/null || true) | tr "\n" " ") "

# Refuse service starts during the install (invoke-rc.d honours policy-rc.d),
# unless the machine already has its own policy, which is then left as it is.
POLICY=/usr/sbin/policy-rc.d
placed_policy=0
cleanup() { if ((placed_policy)); then rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [[ ! -e "$POLICY" ]]; then
  printf '#!/bin/sh\n# placed by taskplane scripts/ensure-test-tools.sh while it installs\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  placed_policy=1
fi

say "installing ${missing_pkgs[*]} with apt-get"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"

cleanup
placed_policy=0

# Stop any Prometheus server the package's scripts started anyway.
for pid in $(pgrep -x prometheus 2>/dev/null || true); do
  [[ "$before_pids" == *" $pid "* ]] && continue
  say "stopping the prometheus server (pid $pid) that the package started: only promtool is wanted"
  kill "$pid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
done

report
