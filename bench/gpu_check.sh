#!/usr/bin/env bash
# The GPU device check: on a machine with an NVIDIA GPU and CuPy already installed
# (no network needed), record the machine, run the GPU tests (the engine-parity suite
# under the gpu marker), the objective-history diagnosis and the GPU benchmark; about
# five minutes in all.
# Every step runs even if an earlier one failed, under its own time limit, and writes
# its output to OUTDIR as it goes; the exit status is the first failure's.
# Usage: bash bench/gpu_check.sh [OUTDIR]      (elsewhere: pip install -e '.[test,gpu]' first)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run, tee to OUTDIR/NAME.txt, keep the first failure
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc"
    [ "$status" -ne 0 ] || status=$rc
}
step machine 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
python3 -c "import sys, numpy, scipy, cupy; print(sys.version.split()[0], numpy.__version__, scipy.__version__, cupy.__version__)";
python3 -c "import cupy, nmfcli.engines.cupy as e; print(\"array-API fill-ins:\", sorted(set(vars(e.XP)) - set(vars(cupy))) if e.XP is not cupy else \"none needed\")"'
step gpu_tests 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engines.py
step gpu_history 120 python3 bench/gpu_history_check.py
step gpu_bench 420 python3 bench/gpu_bench.py --cpu-seconds 40 --transform --json "$out/gpu_bench.json"
exit "$status"
