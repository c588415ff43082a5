#!/usr/bin/env bash
# TextVQA val (5,000 questions, with OCR tokens): VQA accuracy.
#   scripts/eval/textvqa.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main textvqa "$@"
