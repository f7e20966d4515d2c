#!/usr/bin/env bash
# The main job: set up, then run the default tournament (embedded synthetic UDC data, shipped
# weights, local Ray, SQLite) and print its leaderboard. Extra arguments go to `arena run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/arena run configs/default.toml "$@"
