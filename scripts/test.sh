#!/usr/bin/env bash
# Installs whatever is missing, then runs the whole test suite (slow tests on the real default models too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HOME="${HF_HOME:-$PWD/.cache/hf}"
export HF_HUB_OFFLINE=1
export HYBRID_CACHE="${HYBRID_CACHE:-$PWD/.cache/hybrid}"
exec "${HYBRID_VENV:-.venv}/bin/python" -m pytest "$@"
