#!/usr/bin/env bash
# Train the five restorer families and the diffusion purifier on one large GPU (H200-class) in
# about ten minutes, and write <family>.safetensors + .json and purifier-<size>.safetensors +
# .json to OUT (a new folder: the shipped ones only with ALLOW_SHIPPED=1).
#
#   scripts/train_zoo_gpu.sh OUT [family ...]
#
# The six runs go side by side on the one GPU, two CPU threads each: these networks are small
# (0.4-1M parameters), so one run alone leaves the GPU waiting on kernel launches, and six fill
# it better than six in turn. Each run is `arena train` (or the purifier's trainer) with 128 px
# crops cut afresh on the GPU from the training photographs at the 64 px benchmark's scale
# (--synth-share 1: ScenePool), bf16 autocast, and the checkpoint chosen on the held-out "val"
# photographs; TIME_LIMIT stops a run that is slower than sized (it says so in its manifest).
# The embedded splits are generated once first (CPU, cached under $ARENA_CACHE).
#
# Knobs (defaults are the GPU recipe; tests/test_train_gpu_script.py runs it on the CPU with
# DEVICE=cpu SIZE=16 CROP=16 BATCH=2 STEPS=2 PURIFIER_SIZE=16 PURIFIER_STEPS=2):
#   DEVICE, SIZE (stored/validation/test side), CROP, BATCH, STEPS (all families), THREADS,
#   TIME_LIMIT (seconds per run), PURIFIER_SIZE, PURIFIER_STEPS, PURIFIER_BATCH, PYTHON
set -euo pipefail
OUT=${1:?usage: scripts/train_zoo_gpu.sh OUT [family ...]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
for shipped in plugins/restorers/weights plugins/defenses/weights; do
  if [ "$OUT" = "$(cd "$shipped" && pwd)" ] && [ "${ALLOW_SHIPPED:-0}" != 1 ]; then
    echo "refusing to write over the shipped weights in $shipped (set ALLOW_SHIPPED=1)" >&2
    exit 2
  fi
done
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}  # an accelerator host has no .venv
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-64}
CROP=${CROP:-128}
THREADS=${THREADS:-2}
TIME_LIMIT=${TIME_LIMIT:-450}
PURIFIER_SIZE=${PURIFIER_SIZE:-64}
FAMILIES=("$@")
[ ${#FAMILIES[@]} -eq 0 ] && FAMILIES=(unet udcunet nafnet discnet uformer purifier)

# Per family: steps, batch, peak learning rate. Sized from CPU step costs by
# scripts/bench_train_step.py (README, "Training on a GPU"): a GPU step costs its kernel count
# x 10 us of launches plus its CPU time at batch 32 x 128 px / 2000 of compute; the six runs
# together ask 2.2x what one GPU computes, so each gets 1/2.2 of its alone speed, and steps are
# 80% of what then fits in 420 s. Nothing here was measured on a GPU.
declare -A RECIPE=(
  [unet]="11600 32 1.5e-3"
  [nafnet]="3000 32 2e-3"
  [udcunet]="7400 32 1.5e-3"
  [discnet]="6600 32 1.5e-3"
  [uformer]="2700 32 7e-4"
)
PURIFIER_STEPS=${PURIFIER_STEPS:-3100}
PURIFIER_BATCH=${PURIFIER_BATCH:-64}

mkdir -p "$OUT/logs"
"$PY" - "$SIZE" "$PURIFIER_SIZE" <<'PY'
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

from arena.data import load_data


def load(job):
    split, size = job
    data = load_data("embedded", split, size=size, seed=0)
    return f"embedded {split} at {size} px: {len(data)} pairs, hash {data.hash[:12]}"


jobs = [(split, size) for size in sorted({int(a) for a in sys.argv[1:]})
        for split in ("train", "extra", "val", "test")]
# one process per split, each cached for the runs that follow
with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as pool:
    for line in pool.map(load, jobs):
        print(line)
PY

pids=()
for name in "${FAMILIES[@]}"; do
  if [ "$name" = purifier ]; then
    "$PY" - "$PURIFIER_STEPS" "$OUT/purifier-$PURIFIER_SIZE.safetensors" "$PURIFIER_SIZE" \
      "$PURIFIER_BATCH" "$DEVICE" "$THREADS" "$TIME_LIMIT" >"$OUT/logs/purifier.log" 2>&1 <<'PY' &
import json, sys
from arena_plugins.defenses.purifier import train_purifier
from arena.weights import read_manifest

steps, out, size, batch, device, threads, time_limit = sys.argv[1:]
path = train_purifier(int(steps), out, seed=0, size=int(size), batch=int(batch), device=device,
                      threads=int(threads), scenes="train+extra", progress=False,
                      time_limit=float(time_limit))
print(path)
print(json.dumps(read_manifest(path)["eval"], indent=2))
PY
  else
    read -r steps batch lr <<<"${RECIPE[$name]:?unknown family $name}"
    "$PY" -m arena.cli train "$name" --steps "${STEPS:-$steps}" --batch "${BATCH:-$batch}" \
      --lr "$lr" --size "$SIZE" --crop "$CROP" --synth-share 1 --data-seeds 1 \
      --scenes train+extra --device "$DEVICE" --threads "$THREADS" --time-limit "$TIME_LIMIT" \
      --seed 0 --no-resume --quiet --out "$OUT" >"$OUT/logs/$name.log" 2>&1 &
  fi
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "${FAMILIES[$i]} failed: $OUT/logs/${FAMILIES[$i]}.log" >&2
    tail -5 "$OUT/logs/${FAMILIES[$i]}.log" >&2
    failed=1
  fi
done
cat "$OUT"/logs/*.log | grep -E "clean PSNR|safetensors" || true
exit $failed
