#!/usr/bin/env bash
# Stage 2 (instruction tuning): train the projector and the LM on the LLaVA-1.5 665K mix; the CLIP tower stays frozen.
#
#   scripts/finetune.sh GPU_LIST [PROJECTOR_TYPE] [VISION_TOWER_TYPE] [extra train.py flags...]
#   scripts/finetune.sh 0,1,2,3                    # the paper's run: global batch 32, lr 4e-5, ZeRO-3, 1 epoch
#
# Paths (environment; defaults follow LLaVA's playground layout, relative to the current directory):
#   LM_PATH              Xmodel-LM (or any Llama) checkpoint        ./models/Xmodel_LM
#   VISION_TOWER         CLIP ViT-L/14-336 directory                ./models/clip-vit-large-patch14-336
#   PRETRAIN_OUTPUT_DIR  stage 1's OUTPUT_DIR                       ./checkpoints/xmodelvlm-PROJECTOR-TOWER-pretrain
#   PROJECTOR_PATH       stage 1's projector                        $PRETRAIN_OUTPUT_DIR/mm_projector.bin
#   FINETUNE_DATA        conversation JSON/JSONL                    ./playground/data/llava_v1_5_mix665k.json
#   FINETUNE_IMAGES      the folder its image paths are relative to ./playground/data
#   OUTPUT_DIR           the final checkpoint                       ./checkpoints/xmodelvlm-PROJECTOR-TOWER
#   LOGGING_DIR          TensorBoard folder                         ./runs/<OUTPUT_DIR name>
# Launch settings (LAUNCHER, HOSTFILE, DEEPSPEED_CONFIG, GLOBAL_BATCH, PER_DEVICE_BATCH, DEVICE, ...): see
# scripts/train_common.sh. CPU smoke test: DEVICE=cpu LAUNCHER=python DEEPSPEED_CONFIG=none scripts/finetune.sh 0 --max_steps 5
# Rerunning with the same OUTPUT_DIR resumes from its newest checkpoint.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
parse_positionals "$@"

LM_PATH=${LM_PATH:-./models/Xmodel_LM}
VISION_TOWER=${VISION_TOWER:-./models/clip-vit-large-patch14-336}
PRETRAIN_OUTPUT_DIR=${PRETRAIN_OUTPUT_DIR:-./checkpoints/xmodelvlm-${PROJECTOR_TYPE}-${VISION_TOWER_TYPE}-pretrain}
PROJECTOR_PATH=${PROJECTOR_PATH:-$PRETRAIN_OUTPUT_DIR/mm_projector.bin}
FINETUNE_DATA=${FINETUNE_DATA:-./playground/data/llava_v1_5_mix665k.json}
FINETUNE_IMAGES=${FINETUNE_IMAGES:-./playground/data}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/xmodelvlm-${PROJECTOR_TYPE}-${VISION_TOWER_TYPE}}
LOGGING_DIR=${LOGGING_DIR:-./runs/$(basename "$OUTPUT_DIR")}

require_dir "$LM_PATH" LM_PATH
require_dir "$VISION_TOWER" VISION_TOWER
require_file "$PROJECTOR_PATH" PROJECTOR_PATH
require_file "$FINETUNE_DATA" FINETUNE_DATA
require_dir "$FINETUNE_IMAGES" FINETUNE_IMAGES

NUM_PROCESSES=$(count_processes)
split_batch "${GLOBAL_BATCH:-32}" "${PER_DEVICE_BATCH:-8}" "$NUM_PROCESSES"
DEVICE_KIND=$(detect_device)
echo ">>> stage 2: $NUM_PROCESSES process(es) × batch $PER_DEVICE × accumulation $GRAD_ACCUM on $DEVICE_KIND" >&2

# shellcheck disable=SC2046  # the flag helpers print several words on purpose
launch "$NUM_PROCESSES" "$DEVICE_KIND" \
    $(deepspeed_flags "$REPO_DIR/scripts/deepspeed/zero3.json") \
    --model_name_or_path "$LM_PATH" \
    --version v1 \
    --data_path "$FINETUNE_DATA" \
    --image_folder "$FINETUNE_IMAGES" \
    --vision_tower "$VISION_TOWER" \
    --vision_tower_type "$VISION_TOWER_TYPE" \
    --pretrain_mm_mlp_adapter "$PROJECTOR_PATH" \
    --mm_projector_type "$PROJECTOR_TYPE" \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    $(precision_flags "$DEVICE_KIND") \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps 2000 \
    --save_total_limit 1 \
    --learning_rate 4e-5 \
    --weight_decay 0. \
    --warmup_steps 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers "${NUM_WORKERS:-4}" \
    --lazy_preprocess True \
    --report_to tensorboard \
    --logging_dir "$LOGGING_DIR" \
    "${EXTRA_ARGS[@]}"
