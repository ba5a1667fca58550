#!/usr/bin/env bash
# The GPU checks of the precision switch and the GPU kernels, as one short script for a lent
# device (docs/gpu.md, docs/precision.md). Run from the repository root:
#     bash benchmarks/gpu_checks.sh [PYTHON]
# It needs a Python with hpcquests' dependencies and CuPy (pip install -e ".[gpu,test]"); it
# stops at once, saying so, when CuPy or a device is missing. Outputs go to $OUT (or
# benchmarks/out): pytest's log, gpu.json and this script's log.
set -uo pipefail
PY=${1:-python3}
OUT_DIR=${OUT:-benchmarks/out}
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/gpu_checks.log") 2>&1
"$PY" - <<'PYEOF' || { echo "gpu_checks: CuPy or a CUDA device is missing"; exit 3; }
import cupy
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0
print("CuPy", cupy.__version__, "devices:", n, cupy.cuda.runtime.getDeviceProperties(0)["name"])
PYEOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
# 1. the GPU tests (the CPU result is the oracle: float64 to 1e-10, float32 within the shared bound)
timeout 600 "$PY" -m pytest -q tests/gpu -p no:cacheprovider | tail -20
# 2. float64 and float32 pairs/s, every float32 row against its bound, the 32.5M x 4,224 scan
timeout 900 "$PY" benchmarks/gpu_bench.py --full --out "$OUT_DIR/gpu.json"
