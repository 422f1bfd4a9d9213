#!/usr/bin/env bash
# The GPU device check: on a machine with an NVIDIA GPU and CuPy already installed
# (no network needed), run the GPU tests (the engine-parity suite under the gpu
# marker) and the GPU benchmark; a few minutes in all.
# Usage: bash bench/gpu_check.sh [OUTDIR]      (elsewhere: pip install -e '.[test,gpu]' first)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import cupy, numpy, scipy, h5py, click, rich; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engines.py 2>&1 | tee "$out/gpu_tests.txt"
python3 bench/gpu_bench.py --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.txt"
