#!/usr/bin/env bash
# On the GPU machine, in the repository's root: install the carried wheels (benchmarks/gpu_wheels.sh)
# into /tmp/site, import this checkout from its root (no `pip install -e .` needed) and run
# benchmarks/gpu_check.py, writing gpu_check.json / gpu_check.md into $OUT (or ./gpu_check_out).
#     bash benchmarks/gpu_check.sh [gpu_check.py options...]
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
exec python3 benchmarks/gpu_check.py --out "${OUT:-gpu_check_out}" "$@"
