#!/usr/bin/env bash
# Stage 1 (feature alignment): train the projector on LLaVA-Pretrain captions; the CLIP tower and the LM stay frozen.
#
#   scripts/pretrain.sh GPU_LIST [PROJECTOR_TYPE] [VISION_TOWER_TYPE] [extra train.py flags...]
#   scripts/pretrain.sh 0,1,2,3                    # the paper's run: global batch 64, lr 1e-3, ZeRO-2, 1 epoch
#   scripts/pretrain.sh 0 xdpnetv10_4 clip --max_steps 5
#
# Paths (environment; defaults follow LLaVA's playground layout, relative to the current directory):
#   LM_PATH          Xmodel-LM (or any Llama) checkpoint            ./models/Xmodel_LM
#   VISION_TOWER     CLIP ViT-L/14-336 directory                    ./models/clip-vit-large-patch14-336
#   PRETRAIN_DATA    caption JSON/JSONL                             ./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json
#   PRETRAIN_IMAGES  its image folder                               ./playground/data/LLaVA-Pretrain/images
#   OUTPUT_DIR       where mm_projector.bin goes                    ./checkpoints/xmodelvlm-PROJECTOR-TOWER-pretrain
#   LOGGING_DIR      TensorBoard folder                             ./runs/<OUTPUT_DIR name>
# Launch settings (LAUNCHER, HOSTFILE, DEEPSPEED_CONFIG, GLOBAL_BATCH, PER_DEVICE_BATCH, DEVICE, ...): see
# scripts/train_common.sh. Without a GPU the run goes to the CPU (--use_cpu, fp32), e.g. for a smoke test:
#   DEVICE=cpu LAUNCHER=python DEEPSPEED_CONFIG=none scripts/pretrain.sh 0 --max_steps 5
# Rerunning with the same OUTPUT_DIR resumes from its newest checkpoint.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
parse_positionals "$@"

LM_PATH=${LM_PATH:-./models/Xmodel_LM}
VISION_TOWER=${VISION_TOWER:-./models/clip-vit-large-patch14-336}
PRETRAIN_DATA=${PRETRAIN_DATA:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
PRETRAIN_IMAGES=${PRETRAIN_IMAGES:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/xmodelvlm-${PROJECTOR_TYPE}-${VISION_TOWER_TYPE}-pretrain}
LOGGING_DIR=${LOGGING_DIR:-./runs/$(basename "$OUTPUT_DIR")}

require_dir "$LM_PATH" LM_PATH
require_dir "$VISION_TOWER" VISION_TOWER
require_file "$PRETRAIN_DATA" PRETRAIN_DATA
require_dir "$PRETRAIN_IMAGES" PRETRAIN_IMAGES

NUM_PROCESSES=$(count_processes)
split_batch "${GLOBAL_BATCH:-64}" "${PER_DEVICE_BATCH:-16}" "$NUM_PROCESSES"
DEVICE_KIND=$(detect_device)
echo ">>> stage 1: $NUM_PROCESSES process(es) × batch $PER_DEVICE × accumulation $GRAD_ACCUM on $DEVICE_KIND" >&2

# shellcheck disable=SC2046  # the flag helpers print several words on purpose
launch "$NUM_PROCESSES" "$DEVICE_KIND" \
    $(deepspeed_flags "$REPO_DIR/scripts/deepspeed/zero2.json") \
    --model_name_or_path "$LM_PATH" \
    --version plain \
    --data_path "$PRETRAIN_DATA" \
    --image_folder "$PRETRAIN_IMAGES" \
    --vision_tower "$VISION_TOWER" \
    --vision_tower_type "$VISION_TOWER_TYPE" \
    --mm_projector_type "$PROJECTOR_TYPE" \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    $(precision_flags "$DEVICE_KIND") \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps 1000 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
    --mm_projector_lr 1e-3 \
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
