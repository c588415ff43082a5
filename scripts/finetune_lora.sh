#!/usr/bin/env bash
# Stage 2 with LoRA: adapters on the LM's linear layers + the projector (LLaVA-1.5's LoRA recipe: r 128, alpha 256,
# lr 2e-4, projector lr 2e-5), then merge with scripts/merge_lora.py:
#
#   scripts/finetune_lora.sh GPU_LIST [PROJECTOR_TYPE] [VISION_TOWER_TYPE] [extra train.py flags...]
#   python scripts/merge_lora.py --model-path $OUTPUT_DIR --model-base $LM_PATH --vision-tower $VISION_TOWER \
#       --save-path ./checkpoints/xmodelvlm-merged
#
# Same environment as scripts/finetune.sh (OUTPUT_DIR defaults to ./checkpoints/xmodelvlm-PROJECTOR-TOWER-lora);
# QLoRA: add --bits 4 (needs CUDA and bitsandbytes; use DEEPSPEED_CONFIG=none or zero2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
parse_positionals "$@"
export OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/xmodelvlm-${PROJECTOR_TYPE}-${VISION_TOWER_TYPE}-lora}
# finetune.sh takes the positionals again; the LoRA flags come after its defaults, so they win.
exec "$(dirname "${BASH_SOURCE[0]}")/finetune.sh" "$GPU_LIST" "$PROJECTOR_TYPE" "$VISION_TOWER_TYPE" \
    --lora_enable True --lora_r 128 --lora_alpha 256 --learning_rate 2e-4 --mm_projector_lr 2e-5 \
    "${EXTRA_ARGS[@]}"
