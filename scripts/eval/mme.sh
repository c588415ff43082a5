#!/usr/bin/env bash
# MME (2,374 questions): perception and cognition scores.
#   scripts/eval/mme.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main mme "$@"
