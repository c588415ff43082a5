#!/usr/bin/env bash
# VizWiz test (8,000 questions): answers + the EvalAI submission file (scored on the server).
#   scripts/eval/vizwiz.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main vizwiz "$@"
