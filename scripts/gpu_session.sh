#!/usr/bin/env bash
# What one short session on a lent GPU does, in one go: the bench on the GPU, then the general and the
# summarization refiners retrained on more examples than the CPU can see. Each training run first times a
# short probe, then sizes its step count to fit its time budget (so the cosine decay completes).
#
#   bash scripts/gpu_session.sh OUT [GENERAL_S] [SUMMARIZE_S] [extra finetune overrides...]
#
# OUT gets bench/, general/ and summarize/ (each refiner with its recipe, train log and validation figures).
# Needs hybrid importable and the default drafter installed (bash scripts/install.sh on the GPU machine).
set -uo pipefail
out=${1:?usage: gpu_session.sh OUT [GENERAL_S] [SUMMARIZE_S] [overrides...]}
general_s=${2:-180}
summarize_s=${3:-130}
shift $(( $# < 3 ? $# : 3 ))
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

note() { echo "[gpu_session $(date +%T)] $*"; }

note "bench"
timeout 150 $py -m hybrid.cli bench --preset quick --device "${DEVICE:-cuda}" --no-memory --output "$out/bench" 2>&1 \
  | tr '\r' '\n' | grep -v "^bench:" | tail -25

# train RECIPE NAME SECONDS BATCH EXTRA...: probe 20 steps, then the real run sized to SECONDS.
train() {
  local recipe=$1 name=$2 seconds=$3 batch=$4; shift 4
  local probe
  probe=$(mktemp -d -t "probe-$name.XXXXXX")  # under $TMPDIR (or the system's temporary folder), removed below
  note "$name: probe"
  local line
  line=$(timeout 120 $py -m hybrid.cli finetune "$recipe" train.output_dir="$probe" train.steps=20 train.batch_size="$batch" \
    train.eval_every=20 train.save_every=1000 train.max_minutes=0 "$@" 2>&1 | tee "$out/$name-probe.log" | grep "^trained")
  # Seconds per step from steps 10 to 20 of the probe's log: the first steps (CUDA start-up) are several times slower.
  local per_step
  per_step=$($py -c "import json,sys; t={r['step']: r['elapsed_s'] for r in map(json.loads, open(sys.argv[1]))}; print((t[20]-t[10])/10)" \
    "$probe/train_log.jsonl" 2>/dev/null || echo 1)
  local steps
  steps=$(awk -v s="$seconds" -v p="$per_step" 'BEGIN { n = int(0.8 * s / (p > 0 ? p : 1)); if (n < 20) n = 20; print n }')
  rm -rf "$probe"
  note "$name: $line -> $per_step s/step -> $steps steps"
  timeout $(( seconds + 90 )) $py -m hybrid.cli finetune "$recipe" train.output_dir="$out/$name" train.steps="$steps" \
    train.batch_size="$batch" train.eval_every=$(( steps / 4 > 0 ? steps / 4 : 1 )) train.save_every=$(( steps / 2 > 0 ? steps / 2 : 1 )) \
    train.warmup_steps=$(( steps / 20 + 1 )) train.max_minutes="$(awk -v s="$seconds" 'BEGIN { print s / 60 }')" "$@" 2>&1 \
    | tr '\r' '\n' | grep -v "finetune:" | tail -5
  rm -rf "$out/$name/checkpoint-latest"
  note "$name: validation $(cat "$out/$name/validation.json" 2>/dev/null | tr -d '\n ')"
}

train recipes/continue.yaml general "$general_s" 32 "$@"
train recipes/summarize.yaml summarize "$summarize_s" 16 "$@"
note "done"
