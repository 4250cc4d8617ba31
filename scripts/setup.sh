#!/usr/bin/env bash
# Set up .venv with the exact versions in requirements.lock (CPU torch; never torchvision),
# install mmsent in it (editable) and check that the default model loads. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
links=()
[ -d /opt/wheels ] && links=(--find-links /opt/wheels)  # a local CPU torch wheel, where there is one
[ -x .venv/bin/python ] || uv venv -q -p 3.11 .venv
uv pip install -q -p .venv "${links[@]}" -r requirements.lock
uv pip install -q -p .venv "${links[@]}" --no-deps -e .
.venv/bin/python -c "from mmsent.models.checkpoint import read_meta; m = read_meta(); print('mmsent ready:', m['model']['name'], m['model']['version'])"
