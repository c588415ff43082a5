#!/usr/bin/env bash
# The embedded demo: the whole system on synthetic data, on a CPU, in one command (no GPU, no downloads):
# synthetic data → tokenizer → CLIP tower → LM → stage 1 (scripts/pretrain.sh) → stage 2 (scripts/finetune.sh)
# → scripts/eval/{pope,gqa,mme}.sh on stage 1 alone and after stage 2 → inference.py, then a results table.
#
#   bash scripts/demo.sh [OUT_DIR (default ./demo_out)] [--quick] [--fresh | --from STEP] [--jobs N] [--threads N]
#
#   --quick        the shortened CI run (less data, fewer steps)
#   --fresh        rebuild every step; by default a rerun reuses finished steps and resumes an interrupted one
#   --from STEP    rebuild STEP and what depends on it (data tokenizer clip lm stage1 export eval1-pope eval1-gqa
#                  eval1-mme stage2 eval2-pope eval2-gqa eval2-mme inference)
#   --jobs N       steps run side by side (default: the number of cores); --threads N per process (default 1)
#
# Writes OUT_DIR/results.json ({"stage1": {pope_f1, gqa_accuracy, mme_perception}, "stage2": {...}, "seconds"}),
# logs in OUT_DIR/logs/. PYTHON picks the interpreter (default: .venv/bin/python when present, else python3).
# Exit status: 0 done; 2 bad input (one line says what); 1 a step failed (its log's last lines are shown).
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$REPO_DIR/.venv/bin/python" ]; then
    PY="$REPO_DIR/.venv/bin/python"
else
    PY=python3
fi
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m xmodelvlm.demo.run "$@"
