#!/usr/bin/env bash
# Train the built-in restorer zoo on the embedded benchmark and write the shipped weights
# (plugins/restorers/weights/<name>.safetensors + <name>.json manifest).
#
#   scripts/train_zoo.sh                  # all families, one after the other
#   scripts/train_zoo.sh unet nafnet      # some of them
#
# Families train one at a time, on one thread each (two threads on two busy cores were 6x
# slower per step); run two queues side by side on a two-core machine. Interrupted runs
# resume from their last checkpoint ($ARENA_CACHE/train/...). The shipped weights and the
# README table came from this script at commit c680501, before issue 20 changed what
# `arena train` does by default (more training photographs, checkpoints chosen on the held-out
# "val" photographs, fresh pairs cut from the photographs on the device); run it at that commit
# to rebuild them, or as is for the new recipe. On a GPU: scripts/train_zoo_gpu.sh OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-plugins/restorers/weights}
THREADS=${THREADS:-1}
FAMILIES=("$@")
EXTRA=(${TRAIN_ARGS:-})  # e.g. TRAIN_ARGS="--quiet"
[ ${#FAMILIES[@]} -eq 0 ] && FAMILIES=(unet udcunet nafnet discnet uformer)

# Per family: steps, batch, peak learning rate (crops are the full 64 px samples). Steps are
# chosen so the zoo trains in about 80 minutes on an idle two-core CPU as two queues side by
# side (`scripts/train_zoo.sh unet nafnet udcunet & scripts/train_zoo.sh discnet uformer`),
# about half an hour per family: the families differ 4x in cost per step. NAFNet takes a
# higher peak rate (2e-3 at 3000 steps gave 24.1 dB, 1e-3 at 1200 steps 23.1), the
# transformer a lower one (it overshot at 1e-3 with batch 4).
declare -A RECIPE=(
  [unet]="12000 8 1.5e-3"
  [nafnet]="10000 8 2e-3"
  [udcunet]="10000 8 1.5e-3"
  [discnet]="7500 8 1.5e-3"
  [uformer]="4200 8 7e-4"
)

for name in "${FAMILIES[@]}"; do
  read -r steps batch lr <<<"${RECIPE[$name]:?unknown family $name}"
  "$PY" -m arena.cli train "$name" --steps "$steps" --batch "$batch" --lr "$lr" \
    --threads "$THREADS" --seed 0 --out "$OUT" "${EXTRA[@]}"
done
