#!/usr/bin/env bash
# GQA testdev-balanced (12,578 questions): accuracy, binary/open split.
#   scripts/eval/gqa.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main gqa "$@"
