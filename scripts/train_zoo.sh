#!/usr/bin/env bash
# Train the built-in restorer zoo on the embedded benchmark and write the shipped weights
# (plugins/restorers/weights/<name>.safetensors + <name>.json manifest).
#
#   scripts/train_zoo.sh                  # all families, one after the other
#   scripts/train_zoo.sh unet nafnet      # some of them
#
# Families train one at a time: the CPU budget is ~35 minutes for the whole zoo. On a shared
# CPU one thread is fastest (two threads on two busy cores were 6x slower per step); set
# THREADS=2 on an idle machine. Interrupted runs resume from their last checkpoint
# ($ARENA_CACHE/train/...). The command that produced the README table is this script as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-plugins/restorers/weights}
THREADS=${THREADS:-1}
FAMILIES=("$@")
EXTRA=(${TRAIN_ARGS:-})  # e.g. TRAIN_ARGS="--quiet"
[ ${#FAMILIES[@]} -eq 0 ] && FAMILIES=(unet udcunet nafnet discnet uformer)

# Per family: steps, batch, peak learning rate (crops are the full 64 px samples). Steps are
# chosen so each family trains in about 8 minutes on one busy CPU core (they differ ~4x in
# cost per step); the transformer gets a lower peak rate (it overshoots at 1e-3).
declare -A RECIPE=(
  [unet]="2000 8 1e-3"
  [udcunet]="1600 8 1e-3"
  [nafnet]="1200 8 1e-3"
  [discnet]="900 8 1e-3"
  [uformer]="1000 4 5e-4"
)

for name in "${FAMILIES[@]}"; do
  read -r steps batch lr <<<"${RECIPE[$name]:?unknown family $name}"
  "$PY" -m arena.train "$name" --steps "$steps" --batch "$batch" --lr "$lr" \
    --threads "$THREADS" --seed 0 --out "$OUT" "${EXTRA[@]}"
done
