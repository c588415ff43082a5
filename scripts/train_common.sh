# Shared by scripts/pretrain.sh, finetune.sh and finetune_lora.sh (sourced, not run).
#
# Environment (all optional):
#   LAUNCHER          deepspeed (default) | torchrun | python   how to start train.py
#   HOSTFILE          DeepSpeed hostfile for multi-node runs ("host slots=N" lines); GPU_LIST is then ignored
#   MASTER_PORT       rendezvous port (default 29500)
#   DEEPSPEED_CONFIG  a ZeRO JSON, or "none" to train without DeepSpeed (plain DDP / one process)
#   GLOBAL_BATCH      samples per optimizer step over all GPUs (stage defaults: 64 / 32)
#   PER_DEVICE_BATCH  largest per-GPU micro-batch (stage defaults: 16 / 8); accumulation makes up the rest
#   DEVICE            auto (default) | cuda | cpu   cpu: --use_cpu, no bf16/tf32 (smoke runs on a laptop / CI)
#   PYTHON            python interpreter (default: python3 on PATH, or .venv/bin/python when present)

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    echo "error: $*" >&2
    exit 2
}

require_dir() {  # require_dir PATH VARIABLE_NAME
    [ -d "$1" ] || die "$2=$1: directory not found (set $2=/path/to/it)"
}

require_file() {  # require_file PATH VARIABLE_NAME
    [ -f "$1" ] || die "$2=$1: file not found (set $2=/path/to/it)"
}

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x "$REPO_DIR/.venv/bin/python" ]; then echo "$REPO_DIR/.venv/bin/python"
    else echo python3
    fi
}

# parse_positionals "$@": GPU_LIST [PROJECTOR_TYPE] [VISION_TOWER_TYPE]; sets EXTRA_ARGS to what follows.
parse_positionals() {
    [ $# -ge 1 ] || die "usage: $0 GPU_LIST [PROJECTOR_TYPE] [VISION_TOWER_TYPE] [extra train.py flags...] (e.g. $0 0,1,2,3)"
    GPU_LIST="$1"; shift
    PROJECTOR_TYPE="xdpnetv10_4"
    VISION_TOWER_TYPE="clip"
    if [ $# -gt 0 ] && [[ "$1" != --* ]]; then PROJECTOR_TYPE="$1"; shift; fi
    if [ $# -gt 0 ] && [[ "$1" != --* ]]; then VISION_TOWER_TYPE="$1"; shift; fi
    [[ "$GPU_LIST" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "GPU_LIST must be comma-separated GPU ids such as 0,1,2,3, got '$GPU_LIST'"
    [ "$VISION_TOWER_TYPE" = "clip" ] || die "VISION_TOWER_TYPE '$VISION_TOWER_TYPE' is not supported; only clip is"
    EXTRA_ARGS=("$@")
}

count_processes() {
    if [ -n "${HOSTFILE:-}" ]; then
        require_file "$HOSTFILE" HOSTFILE
        local n
        n=$(grep -v '^[[:space:]]*#' "$HOSTFILE" | grep -o 'slots=[0-9]*' | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
        [ -n "$n" ] && [ "$n" -gt 0 ] || die "HOSTFILE=$HOSTFILE lists no 'host slots=N' lines"
        echo "$n"
    else
        echo "$GPU_LIST" | tr ',' '\n' | wc -l
    fi
}

# split_batch GLOBAL PER_DEVICE_MAX NUM_PROCESSES → sets PER_DEVICE and GRAD_ACCUM (PER_DEVICE*ACCUM*N = GLOBAL).
split_batch() {
    local global=$1 max=$2 n=$3
    (( global % n == 0 )) || die "global batch $global is not divisible by $n processes; set GLOBAL_BATCH or use a GPU count that divides it"
    local per_process=$(( global / n ))
    PER_DEVICE=$(( per_process < max ? per_process : max ))
    while (( per_process % PER_DEVICE != 0 )); do PER_DEVICE=$(( PER_DEVICE - 1 )); done
    GRAD_ACCUM=$(( per_process / PER_DEVICE ))
}

detect_device() {
    local py
    py=$(pick_python)
    case "${DEVICE:-auto}" in
        cuda) echo cuda ;;
        cpu) echo cpu ;;
        auto) if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
                  echo cuda; else echo cpu; fi ;;
        *) die "DEVICE must be auto, cuda or cpu, got '${DEVICE}'" ;;
    esac
}

# precision_flags DEVICE → the bf16/tf32 flags (GPU) or the CPU fallback.
precision_flags() {
    if [ "$1" = "cuda" ]; then
        echo "--bf16 True --tf32 True"
    else
        echo "--use_cpu True --bf16 False --tf32 False"
    fi
}

# launch NUM_PROCESSES DEVICE train.py-args... : start train.py with the chosen launcher.
launch() {
    local n=$1 device=$2; shift 2
    local py port=${MASTER_PORT:-29500}
    py=$(pick_python)
    local cmd
    case "${LAUNCHER:-deepspeed}" in
        deepspeed)
            local ds
            ds="$(dirname "$py")/deepspeed"
            [ -x "$ds" ] || ds=deepspeed
            if [ -n "${HOSTFILE:-}" ]; then
                cmd=("$ds" --hostfile "$HOSTFILE" --master_port "$port")
            elif [ "$device" = "cuda" ]; then
                cmd=("$ds" --include "localhost:$GPU_LIST" --master_port "$port")
            else  # no GPU ids to include on CPU: ask for N processes
                cmd=("$ds" --num_gpus "$n" --master_port "$port")
            fi ;;
        torchrun)
            [ -z "${HOSTFILE:-}" ] || die "HOSTFILE needs LAUNCHER=deepspeed"
            [ "$device" = "cuda" ] && export CUDA_VISIBLE_DEVICES="$GPU_LIST"
            cmd=("$py" -m torch.distributed.run --nproc_per_node "$n" --master_port "$port") ;;
        python)
            (( n == 1 )) || die "LAUNCHER=python starts one process; pass one GPU id (got $n)"
            [ "$device" = "cuda" ] && export CUDA_VISIBLE_DEVICES="$GPU_LIST"
            cmd=("$py") ;;
        *) die "LAUNCHER must be deepspeed, torchrun or python, got '${LAUNCHER}'" ;;
    esac
    echo ">>> ${cmd[*]} $REPO_DIR/train.py $*" >&2
    exec "${cmd[@]}" "$REPO_DIR/train.py" "$@"
}

deepspeed_flags() {  # deepspeed_flags DEFAULT_JSON
    local config=${DEEPSPEED_CONFIG:-$1}
    if [ "$config" = "none" ]; then return; fi
    require_file "$config" DEEPSPEED_CONFIG
    echo "--deepspeed $config"
}
