#!/usr/bin/env bash
# Everything `make run` and `make test` need on a Debian 12 machine:
#   1. Debian packages (as root, only when missing): bind9, bind9-dnsutils,
#      redis-server, plus python3.11 and its venv module if those are missing,
#      plus any package names given as arguments;
#   2. the virtualenv .venv (python3.11 -m venv), created when missing;
#   3. the project with its test extras: pip install -e '.[test]', re-run only
#      when pyproject.toml changed since the last install (FORCE_INSTALL=1 forces it).
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

packages=(bind9 bind9-dnsutils redis-server "$@")
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    packages+=(python3.11 python3.11-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=(python3.11-venv)
fi
scripts/ensure_packages.sh "${packages[@]}"

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "install: $PYTHON not found; install Python 3.11 (apt-get install python3.11 python3.11-venv)" >&2
        exit 1
    fi
    echo "install: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.changegate-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [[ "${FORCE_INSTALL:-0}" == 1 || "$want" != "$have" ]] \
    || ! "$VENV/bin/python" -c 'import importlib.metadata as m, pytest_django; m.version("changegate")' >/dev/null 2>&1; then
    echo "install: pip install -e '.[test]' into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[test]'
    echo "$want" >"$stamp"
fi
