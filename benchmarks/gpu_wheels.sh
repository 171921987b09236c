#!/usr/bin/env bash
# Wheels of the Python packages benchmarks/gpu_check.py needs that the GPU machine's image lacks
# (jsonargparse with its signatures extra: jsonargparse, docstring-parser, typeshed-client; all pure
# Python), at the versions installed here, for that machine's Python (3.12). Run in the repository's
# root where pip reaches the package registry:
#     bash benchmarks/gpu_wheels.sh [DIR]        # default DIR: .whl (added to .git/info/exclude)
# then carry DIR to the GPU machine and run `bash benchmarks/gpu_check.sh` there.
set -euo pipefail
dir="${1:-.whl}"
py="${PYTHON:-python3}"
pins=()
for name in jsonargparse docstring-parser typeshed-client; do
    version="$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)"
    pins+=("${name}${version:+==$version}")
done
mkdir -p "$dir"
if [[ "$dir" != /* ]] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # keep a wheel folder inside the checkout out of commits (but still carried by the device tool when named)
    exclude="$(git rev-parse --git-path info/exclude)"
    grep -qxF "/$dir/" "$exclude" 2>/dev/null || echo "/$dir/" >>"$exclude"
fi
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$dir" "${pins[@]}"
ls -l "$dir"
echo "carry: [\"$dir\"]; on the GPU machine: bash benchmarks/gpu_check.sh"
