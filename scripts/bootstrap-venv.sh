#!/usr/bin/env bash
# Creates .venv from requirements-dev.lock (pinned, compiled from pyproject.toml;
# the runtime pins of requirements.lock plus the test tools).
# Skips the work when the venv already matches the lock file, so it is cheap
# to run before every command. Needs Python 3.11+; on Debian/Ubuntu as root it
# installs the venv module if the system Python lacks it.
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
LOCK=requirements-dev.lock
# Never pick the Python of the venv we may be about to replace.
PATH=$(tr ':' '\n' <<<"$PATH" | grep -vxF "$PWD/$VENV/bin" | paste -sd: -)
say() { printf '[setup] %s\n' "$*"; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
    [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  say "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"; return 1
}

want=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [[ -x "$VENV/bin/python" && -f "$VENV/.lock-sha256" && "$(cat "$VENV/.lock-sha256")" == "$want" ]]; then
  exit 0
fi

python=$(find_python)
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    say "installing the venv module for Python $version with apt-get"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "python$version-venv" || \
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
  else
    say "$python cannot create virtual environments; install python3-venv"; exit 1
  fi
fi

say "creating $VENV with $("$python" --version) from $LOCK"
rm -rf "$VENV"
"$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$LOCK"
echo "$want" > "$VENV/.lock-sha256"
say "ready"
