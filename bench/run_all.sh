#!/usr/bin/env bash
# Runs every load benchmark, one after the other (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec .venv/bin/python bench/load.py all "$@"
