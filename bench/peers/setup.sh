#!/usr/bin/env bash
# Installs what the peer benchmarks need, idempotently:
#   tools : h2load (Debian nghttp2-client), the load generator for both our gRPC server and Feast's HTTP one
#   feast : a separate virtualenv bench/.venv-feast with feast[redis] (its dependencies never touch .venv)
#   pyspy : py-spy in .venv, for the CPU profile of the gRPC retrieve path
# Usage: bench/peers/setup.sh [tools] [feast] [pyspy]   (no argument: all three)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck disable=SC1091
. "$root/scripts/services/_lib.sh"
# shellcheck disable=SC2034  # read by _lib.sh's ofs_log
OFS_SERVICE_NAME=bench-setup

# Pinned so every run compares against the same Feast; 0.67.0 installs on Python 3.11 / Debian 12.
FEAST_VERSION="${OFS_BENCH_FEAST_VERSION:-0.67.0}"
FEAST_VENV="$root/bench/.venv-feast"

tools() {
  command -v h2load >/dev/null 2>&1 || ofs_apt_install nghttp2-client
  h2load --version | head -n 1
}

feast() {
  if [ -x "$FEAST_VENV/bin/feast" ] && "$FEAST_VENV/bin/python" -c \
      "import importlib.metadata as m, sys; sys.exit(m.version('feast') != '$FEAST_VERSION')" 2>/dev/null; then
    echo "feast $FEAST_VERSION already in $FEAST_VENV"
    return 0
  fi
  python3 -m venv "$FEAST_VENV"
  "$FEAST_VENV/bin/pip" install -q --upgrade pip
  "$FEAST_VENV/bin/pip" install -q "feast[redis]==$FEAST_VERSION"
  echo "feast $FEAST_VERSION installed in $FEAST_VENV"
}

pyspy() {
  [ -x "$root/.venv/bin/py-spy" ] || "$root/.venv/bin/pip" install -q py-spy
  "$root/.venv/bin/py-spy" --version
}

[ "$#" -gt 0 ] || set -- tools feast pyspy
for what in "$@"; do
  case "$what" in
    tools | feast | pyspy) "$what" ;;
    *) ofs_usage "bench/peers/setup.sh" "tools|feast|pyspy" ;;
  esac
done
