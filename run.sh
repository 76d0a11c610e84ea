#!/usr/bin/env bash
# collab: one command to run it, one to test it.
#
#   ./run.sh [--host H] [--port P] [--db FILE] [any `collab serve` option]
#       creates .venv if missing, installs collab, applies migrations, serves
#       (defaults 127.0.0.1:8080 and ./data/collab.db; COLLAB_* variables work too; relative paths
#       are taken from this folder, wherever run.sh is called from)
#   ./run.sh --public [options]
#       the same for a team: listens on all interfaces with access control on,
#       the secret kept in ./data/secret (made on first start); prints the admin link
#       (--public may come anywhere among the options)
#   ./run.sh --help
#       the options of `collab serve` (after creating .venv if missing)
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
    local extras="$1"
    local stamp="$VENV/.installed$extras" want
    if [ ! -x "$PY" ]; then
        command -v python3 >/dev/null || die "python3 (3.11 or newer) is needed"
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    want=$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        if ! "$PY" -m pip --version >/dev/null 2>&1; then  # made --without-pip, or pip removed from it
            say "$VENV has no pip: adding it"
            "$PY" -m ensurepip --upgrade >/dev/null \
                || die "$VENV has no pip and ensurepip cannot add it: remove $VENV and run again" \
                       "(Debian: apt-get install python3-venv)"
        fi
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

# Debian packages the tests drive: chromium (browser tests), nginx and openssl
# (the reverse-proxy and TLS tests), systemd (systemd-analyze checks the unit file),
# postgresql (the PostgreSQL backend's tests start their own server; any version),
# redis-server (the cluster tests start their own on a free port), strace (the migration
# tests kill collab at its N-th write through it).
# Each entry is package:path, and the path may be a glob.
TEST_PACKAGES="chromium:/usr/bin/chromium nginx:/usr/sbin/nginx openssl:/usr/bin/openssl systemd:/usr/bin/systemd-analyze postgresql:/usr/lib/postgresql/*/bin/initdb redis-server:/usr/bin/redis-server strace:/usr/bin/strace"

have() {  # have GLOB: some file matching GLOB is executable
    local path
    for path in $1; do [ -x "$path" ] && return 0; done
    return 1
}

ensure_test_packages() {
    local missing="" entry
    for entry in $TEST_PACKAGES; do
        have "${entry#*:}" || missing="$missing ${entry%%:*}"
    done
    [ -z "$missing" ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian packages for the tests:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    for entry in $TEST_PACKAGES; do
        have "${entry#*:}" || die "the tests need ${entry#*:} (Debian: apt-get install ${entry%%:*})"
    done
}

if [ "${1:-}" = "test" ]; then
    shift
    ensure_venv "[test]"
    ensure_node_packages
    ensure_test_packages
    exec "$PY" -m pytest "$@"
fi

for arg in "$@"; do
    case "$arg" in
        -h|--help)  # serve's options, not those of the migrate run before it
            umask 077
            ensure_venv ""
            printf '%s\n' "usage: ./run.sh [--public] [collab serve options]   (or: ./run.sh test [pytest arguments])" \
                "       run.sh creates .venv, installs collab, applies migrations and serves; the options:" ""
            exec "$PY" -m collab serve --help ;;
    esac
done

# --public is run.sh's own option, anywhere among the others: take it out of what collab is given.
public=""
args=()
for arg in "$@"; do
    if [ "$arg" = "--public" ]; then public=1; else args+=("$arg"); fi
done
set -- ${args[@]+"${args[@]}"}

if [ -n "$public" ]; then
    # A secret given on the command line wins, as in the environment: a --secret is used as it is, and
    # the file of a --secret-file is made if it is missing (not ./data/secret beside it).
    secret_file="${COLLAB_SECRET_FILE:-./data/secret}"
    given_secret="${COLLAB_SECRET:-}"
    prev=""
    for arg in "$@"; do
        case "$prev" in
            --secret) given_secret="$arg" ;;
            --secret-file) secret_file="$arg" ;;
        esac
        case "$arg" in
            --secret=*) given_secret="${arg#--secret=}" ;;
            --secret-file=*) secret_file="${arg#--secret-file=}" ;;
        esac
        prev="$arg"
    done
    if [ -z "$given_secret" ] && [ ! -s "$secret_file" ]; then
        (umask 077 && mkdir -p "$(dirname "$secret_file")")  # readable by this user only, as below
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$secret_file")
        say "made a new secret in $secret_file (keep it; it signs every share link)"
    fi
    if [ -z "$given_secret" ]; then
        set -- --host "${COLLAB_HOST:-0.0.0.0}" --secret-file "$secret_file" "$@"
    else
        set -- --host "${COLLAB_HOST:-0.0.0.0}" "$@"
    fi
fi

umask 077  # the database and its folder: readable by this user only, like the secret

ensure_venv ""
# Both under run.sh's name: a mistyped option is the user's, not `collab migrate`'s (collab/cli.py).
COLLAB_RUN_AS="$0" "$PY" -m collab migrate "$@"
COLLAB_RUN_AS="$0" exec "$PY" -m collab serve "$@"
