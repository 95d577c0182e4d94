#!/usr/bin/env bash
# The prepared device check (issue 13; benchmarks/README.md, "Device check"): numerics tests and the paper-size
# benchmarks on one GPU in one go, at most ~8 minutes, everything printed also written under $OUT.
#
#   make device-wheels                                  # here, once: .whl/ (cp312 wheels the GPU machine lacks)
#   bash benchmarks/device_check.sh                     # there, from the repository root (carry .whl)
#   JAX_PLATFORMS=cpu bash benchmarks/device_check.sh --smoke         # CPU, tiny sizes
#
# Flags go to benchmarks/device_check.py (--phases, --budget_s, --tag, --dry_run, ...). Environment: PYTHON
# (default python3), OUT (default ./device_check_out), DEVICE_CHECK_SITE (where the wheels are installed,
# default /tmp/yiplearn_site), DEVICE_CHECK_WHEELS=0 (skip them). Exit status: 0 when every phase passed or
# was skipped, 1 when one failed, 2 when the wheels could not be installed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY="${PYTHON:-python3}"
export OUT="${OUT:-$PWD/device_check_out}"
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
smoke=0
for a in "$@"; do [[ "$a" == --smoke || "$a" == --dry_run ]] && smoke=1; done

{
  echo "device check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on ${HOSTNAME:-?}," \
    "$("$PY" --version 2>&1) at $(command -v "$PY")"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), args: $*"
} 2>&1 | tee -a "$LOG"

# The carried wheels (not on a smoke run: they are cp312 wheels, and the local venv has the packages).
if [[ $smoke == 1 || "${DEVICE_CHECK_WHEELS:-1}" == 0 ]]; then
  :
elif compgen -G '.whl/*.whl' >/dev/null; then
  SITE="${DEVICE_CHECK_SITE:-/tmp/yiplearn_site}"
  t0=$SECONDS
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG"; then
    echo "device check: installing .whl/*.whl into $SITE failed" | tee -a "$LOG"
    exit 2
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls .whl/*.whl | wc -l) wheels into $SITE in $((SECONDS - t0)) s" | tee -a "$LOG"
else
  echo "device check: no .whl/*.whl (make device-wheels, carry .whl): the packages must be installed" \
    | tee -a "$LOG"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec "$PY" benchmarks/device_check.py run "$@"
