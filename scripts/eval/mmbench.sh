#!/usr/bin/env bash
# MMBench dev (EN): CircularEval accuracy + submission.xlsx
# (set QUESTION_FILE=mmbench_test_en_20231003.tsv for the test split).
#   scripts/eval/mmbench.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main mmbench "$@"
