#!/usr/bin/env bash
# POPE (8,910 questions; adversarial, popular, random): F1 (mean), accuracy, yes-ratio.
#   scripts/eval/pope.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Answers chunked over the GPUs in CUDA_VISIBLE_DEVICES (resumable), merged, scored; settings: _common.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
xv_main pope "$@"
