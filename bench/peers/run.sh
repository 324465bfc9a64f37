#!/usr/bin/env bash
# The side-by-side benchmark (issue #8) and the gRPC matrix (issue #5) in one command: installs h2load, the
# Feast virtualenv (bench/.venv-feast) and py-spy, makes sure the shared Redis runs, then runs
# bench/peers/compare.py and replaces its two sections of bench/RESULTS.md. About 15 minutes on 2 cores.
#   bench/peers/run.sh                  # the full comparison
#   bench/peers/run.sh --no-feast       # extra arguments go to compare.py (see its --help)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || scripts/bootstrap
bench/peers/setup.sh
scripts/services/redis start
# shellcheck disable=SC1091
. .venv/bin/activate
OFS_BENCH_VIA_RUN_SH=1 python bench/peers/compare.py --write-results "$@"
