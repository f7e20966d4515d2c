#!/usr/bin/env bash
# Rebuild the shipped diffusion purifier (plugins/defenses/weights/purifier-32.safetensors).
# CPU, one thread, about 9 minutes; seeded. Usage: scripts/train_purifier.sh [steps] [out]
# (`arena train-purifier` does the same through the CLI.)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-850}
OUT=${2:-plugins/defenses/weights/purifier-32.safetensors}
PY=${PYTHON:-.venv/bin/python}
"$PY" - "$STEPS" "$OUT" <<'PY'
import json, sys
import torch
from arena_plugins.defenses.purifier import train_purifier
from arena.weights import read_manifest

torch.set_num_threads(1)
path = train_purifier(int(sys.argv[1]), sys.argv[2], seed=0, size=32, batch=32, threads=1)
print(path)
print(json.dumps(read_manifest(path)["eval"], indent=2))
PY
