#!/usr/bin/env bash
# Rebuilds the committed reports in evals/reports/ for the shipped defaults (hybrid at K=2, the default, and K=8):
# summarize on 16 ACLSum test papers (summarize refiner), continue on 24 held-out Shakespeare windows and all 185
# fact probes (general refiner), each with the metric validations in its header; then the news suite (and, with
# WITH_SUMMARIZE_ALL=1, all 100 ACLSum test papers).
set -euo pipefail
cd "$(dirname "$0")/.."
hybrid=${HYBRID:-.venv/bin/hybrid}
"$hybrid" eval summarize --limit 16 --steps 2,8 --validate
"$hybrid" eval continue --limit 24 --steps 2,8 --validate
"$hybrid" eval facts --steps 2,8 --validate
# The grounded suites (issue 16): all 60 news reports, and all 100 ACLSum test papers (the slowest, ~20 min).
"$hybrid" eval news --steps 2
if [ "${WITH_SUMMARIZE_ALL:-0}" = 1 ]; then "$hybrid" eval summarize --steps 2 --output evals/reports/summarize-all; fi
