#!/usr/bin/env bash
# honed's GPU path, checked and measured in one command on one GPU with no network (issue 13, part 4).
#
#   bash benchmarks/gpu.sh                 # on the GPU machine: under 8 minutes on one H100/H200
#   bash benchmarks/gpu.sh --dry-run       # here, on the CPU: the same code with tiny shapes (~2 min)
#   bash benchmarks/gpu.sh --fetch-wheels  # here, with PyPI reachable: honed's missing packages as wheels
#                                          # in .whl/ (carry it: the GPU machine has no network)
#
# Results: gpu.json and gpu.md in $OUT (the device tool's folder), else in --out DIR, else ./gpu-results.
# Runs from the working tree (PYTHONPATH), nothing installed into the system: the GPU machine's python3 has
# torch+CUDA, transformers, peft, accelerate, rich, pyyaml, jinja2 but not pydantic (honed's config);
# wheels in .whl/ are installed into /tmp/honed-site first when present. Other flags go to benchmarks/gpu.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" = "--dry-run" ] && PY=${PYTHON:-.venv/bin/python}

if [ "${1:-}" = "--fetch-wheels" ]; then
    # For the GPU machine's Python 3.12: honed's config needs pydantic (pydantic-core is compiled, the rest is
    # pure Python); trl (the TRL row) needs datasets, dill and multiprocess, which that image lacks.
    # The versions are the ones tested here.
    EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
    grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection==0.4.5 \
        trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    ls .whl
    exit 0
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# The carried wheels, only where something is missing (they are built for the GPU image's Python 3.12).
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import honed.train.loop, trl" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/honed-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/honed-site"
fi
export HONED_HOME="${HONED_HOME:-/tmp/honed-home}" HF_HUB_OFFLINE=1

if ! $PY -c "import honed.train.loop" 2>/tmp/honed-import.err; then
    echo "honed does not import here: $(tail -1 /tmp/honed-import.err)" >&2
    echo "on a machine with PyPI: bash benchmarks/gpu.sh --fetch-wheels, then carry .whl" >&2
    exit 2
fi
OUT_DIR=${OUT:-gpu-results}
exec $PY benchmarks/gpu.py --out "$OUT_DIR" "$@"
