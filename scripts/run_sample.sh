#!/usr/bin/env bash
# The README's main job: make the sample dump (real texts, real photos, a dozen bad rows) if it is
# missing, score it end to end on a local Ray (127.0.0.1) with the default model, print the job
# summary and a few output rows. Needs scripts/setup.sh first; a few minutes on 2 cores.
#
#   bash scripts/run_sample.sh [DUMP_DIR [OUTPUT_DIR [mmsent score flags...]]]
#   (default: out/sample-dump out/sample-scores; e.g. ... --set model_dir=runs/x/best)
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 AWS_EC2_METADATA_DISABLED=true \
  TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 RAY_DEDUP_LOGS=0
dump=${1:-out/sample-dump}
scores=${2:-out/sample-scores}
[ -f "$dump/posts.jsonl" ] || .venv/bin/mmsent make-sample-dump "$dump"
# --overwrite: a fresh run each time (without it, a re-run resumes and finds nothing left to do)
.venv/bin/mmsent score "$dump/posts.jsonl" "$scores" --config local --overwrite --show 12 "${@:3}"
echo "Parquet files: $(ls "$scores"/*.parquet | wc -l) in $scores; summary: $scores/_summary.json"
