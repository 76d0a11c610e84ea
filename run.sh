#!/usr/bin/env bash
# collab: one command to run it, one to test it.
#
#   ./run.sh [--host H] [--port P] [--db FILE] [any `collab serve` option]
#       creates .venv if missing, installs collab, applies migrations, serves
#       (defaults 127.0.0.1:8080 and ./data/collab.db; COLLAB_* variables work too)
#   ./run.sh test [pytest arguments]
#       installs everything the tests need (Python test extras, the Node
#       packages of tests/js and static/, Debian's chromium when missing and
#       running as root) and runs the whole suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ensure_venv() {
    local extras="$1" stamp="$VENV/.installed$extras" want
    if [ ! -x "$PY" ]; then
        command -v python3 >/dev/null || die "python3 (3.11 or newer) is needed"
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    want=$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing collab$extras into $VENV"
        "$PY" -m pip install --quiet --disable-pip-version-check -e ".$extras"
        echo "$want" > "$stamp"
    fi
}

ensure_node_packages() {
    command -v node >/dev/null && command -v npm >/dev/null \
        || die "node and npm are needed for the tests (Debian: apt-get install nodejs npm)"
    local dir
    for dir in tests/js static; do
        [ -f "$dir/package.json" ] || continue
        if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
            say "installing Node packages in $dir"
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
            touch "$dir/node_modules"
        fi
    done
}

ensure_chromium() {
    [ -x /usr/bin/chromium ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian's chromium for the browser tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
    [ -x /usr/bin/chromium ] || die "the browser tests need /usr/bin/chromium (Debian: apt-get install chromium)"
}

if [ "${1:-}" = "test" ]; then
    shift
    ensure_venv "[test]"
    ensure_node_packages
    ensure_chromium
    exec "$PY" -m pytest "$@"
fi

ensure_venv ""
"$PY" -m collab migrate "$@"
exec "$PY" -m collab serve "$@"
