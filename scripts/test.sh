#!/usr/bin/env bash
# The whole test suite, on a fresh machine with Python 3.11+ and package registries.
#
#   bash scripts/test.sh            # every test
#   bash scripts/test.sh -q -k plan # any pytest arguments
#
# Creates .venv if missing, installs bmxgc with its test extras, installs
# PostgreSQL's server binaries with apt-get when they are missing (the tests
# start a throwaway cluster from them; as root they run it as 'postgres'),
# type-checks bmxgc/ and tests/ with mypy --strict, then runs pytest and
# exits with its status. `bash scripts/test.sh -m unit` runs the tests that
# need no server, in seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    python=$(find_python) || { log "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
    log "creating .venv with $python"
    if ! "$python" -m venv .venv; then
        # Debian's own python3 ships venv separately.
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            rm -rf .venv
            log "installing python3-venv with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv .venv
        else
            log "cannot create .venv with $python (on Debian: apt-get install python3-venv)"
            exit 1
        fi
    fi
fi

log "installing bmxgc with its test extras into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

have_postgres() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if ! have_postgres; then
    if [ "$(id -u)" -ne 0 ]; then
        log "PostgreSQL's server binaries (initdb, pg_ctl) are missing; install them (e.g. apt-get install postgresql) or run as root"
        exit 1
    fi
    log "installing PostgreSQL's server binaries with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    have_postgres || { log "apt-get installed postgresql but initdb is still missing"; exit 1; }
fi

# The package and the tests type-check (mypy --strict; the config is pyproject.toml's).
log "mypy --strict: bmxgc/ and tests/"
.venv/bin/python -m mypy
.venv/bin/python -m mypy --strict tests/

exec .venv/bin/python -m pytest "$@"
