#!/usr/bin/env bash
# The one prepared GPU check: the GPU tests (the inversion's and the composite's) and the
# CPU-vs-GPU benchmark, logs under $OUT.
#
# Run from the repository root on a machine with a CUDA GPU, CuPy, numpy, scipy, xarray and
# numba (the device machine of this workplace has these but not dask or array-api-compat):
#
#   bash benchmarks/gpu_check.sh
#
# Wheels for the missing pure-Python packages are carried in .whl/ (see docs/gpu.md for the
# download command); they are installed with --no-index into /tmp/site, nothing else is
# fetched. Writes env.txt, gpu_tests.log, bench_gpu.log and bench_gpu.json to $OUT
# (default /tmp/xr_itslive_gpu_check). Exit status: 0 when the tests and the benchmark
# passed, else the first failure's status.
set -uo pipefail

OUT=${OUT:-/tmp/xr_itslive_gpu_check}
PY=${PYTHON:-python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The package is used from this checkout, not installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv || true
    "$PY" - <<'EOF'
import importlib
import platform

print("python", platform.python_version())
for name in ("numpy", "scipy", "xarray", "dask", "numba", "cupy", "array_api_compat"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), module.__file__)
    except Exception as err:
        print(name, "NOT IMPORTABLE:", type(err).__name__, err)
EOF
} 2>&1 | tee "$OUT/env.txt"

# The GPU tests: every test marked gpu in these files (the inversion's, and the composite's
# CuPy-chunks test next to its CPU tests).
GPU_TESTS=(
    tests/test_gpu.py
    tests/test_workflows_composite.py::test_composite_on_cupy_chunks_matches_the_cpu
)
timeout "$TEST_TIMEOUT" "$PY" -m pytest -m gpu "${GPU_TESTS[@]}" -rs -v -p no:cacheprovider \
    2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" \
    2>&1 | tee "$OUT/bench_gpu.log"
bench_rc=${PIPESTATUS[0]}

echo "gpu tests: exit $tests_rc; benchmark: exit $bench_rc (logs in $OUT)"
if [ "$tests_rc" -ne 0 ]; then exit "$tests_rc"; fi
exit "$bench_rc"
