#!/usr/bin/env bash
# MM-Vet (218 questions): answers + the results JSON for the official GPT-4 grader.
#   scripts/eval/mmvet.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main mmvet "$@"
