#!/usr/bin/env bash
# Creates .venv and installs udc-arena into it (idempotent; re-run after pyproject changes).
# torch goes in first: a bare requirement would pull the newest CUDA build (several GB).
# ARENA_TORCH picks another build, e.g.
#   ARENA_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ARENA_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip and setuptools speak only when something fails (then everything they said is shown)
quiet() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
stamp="$VENV/.udc-arena-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
quiet "$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  quiet "$PY" -m pip install -q ${ARENA_TORCH:-torch==2.13.0}
fi
quiet "$PY" -m pip install -q -e ".[test,scenes]"  # scenes: the training pool is the same on every machine
# the `pretrained` extra without its declared torchvision, which would replace this torch build
# and does not import beside the CPU one (README, "Bring your own restorer")
# shellcheck disable=SC2046
quiet "$PY" -m pip install -q --no-deps $("$PY" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["pretrained"]))')
echo "$want" > "$stamp"
