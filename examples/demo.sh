#!/usr/bin/env bash
# The main job end to end on the built-in model and the project's example data:
#   check -> split -> show -> train -> eval
# Every step is a plain `honed` command, printed before it runs, so you can copy any of them.
# Run it with `make demo` (installs first). Takes about 10 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

HONED=${HONED:-.venv/bin/honed}
DATA=examples/support_triage.jsonl
OUT=${DEMO_OUT:-runs/demo}
MODEL=smollm2-135m

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

rm -rf "$OUT" "$OUT-data"
step "1/5 check the data (real tokenizer, duplicates, labels, refusals)" \
  "$HONED" data check "$DATA" --model "$MODEL" --max-length 256
step "2/5 split off a holdout (near duplicates stay on one side)" \
  "$HONED" data split "$DATA" --holdout-fraction 0.15 --seed 0 --out "$OUT-data"
step "3/5 see exactly which tokens the loss trains on" \
  "$HONED" data show "$OUT-data/train.jsonl" --model "$MODEL" -n 1
step "4/5 fine-tune with LoRA (holdout loss before and after is logged)" \
  "$HONED" train --data "$OUT-data/train.jsonl" --holdout "$OUT-data/holdout.jsonl" --model "$MODEL" \
  --out "$OUT" --epochs 1 --max-length 256 ${DEMO_TRAIN_ARGS:-}
step "5/5 evaluate: tuned vs base model vs few-shot prompting, with confidence intervals" \
  "$HONED" eval "$OUT" --baselines base,few-shot:3 ${DEMO_EVAL_ARGS:-}
