#!/usr/bin/env bash
# MMBench-CN dev: CircularEval accuracy + submission.xlsx (set QUESTION_FILE for the test split).
#   scripts/eval/mmbench_cn.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main mmbench_cn "$@"
