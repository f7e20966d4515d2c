#!/usr/bin/env bash
# Wheels for running benchmarks/bench_gpu.py on an accelerator host that has torch (with CUDA),
# numpy, scipy, scikit-image, pillow, safetensors, pluggy, click, tqdm and matplotlib but not
# the rest of udc-arena's requirements (nor PyWavelets, for the training scenes), and no
# network. Run here (with network), then carry the folder there and install it:
#
#   benchmarks/gpu_wheels.sh .whl            # here: the project's own wheel plus the missing ones
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site python3 benchmarks/bench_gpu.py      # there
#
# Ray, diffusers and Streamlit are left out on purpose: the benchmark uses the in-process
# executor and only the none defense, and Ray's wheel alone is larger than what travels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }  # this machine's pip config names absent folders
quiet "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$out" .
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
# pins: the versions this checkout's .venv runs, so that what is measured there is what is tested here
pins=$("$py" -m pip list --format=freeze 2>/dev/null | grep -iE \
  '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions|sqlalchemy|greenlet|adversarial[-_]robustness[-_]toolbox|pywavelets)==')
quiet "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$out" $pins
ls -1 "$out"
du -sh "$out"
