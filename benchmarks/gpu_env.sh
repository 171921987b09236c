# Sourced by the GPU machine's scripts (gpu_check.sh, gpu_train_prior.sh), in the repository's root:
# installs the carried wheels (benchmarks/gpu_wheels.sh; folder $WHEELS, default .whl) into /tmp/site
# and puts them and this checkout on PYTHONPATH (no `pip install -e .` needed there).
wheels="${WHEELS:-.whl}"
if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
