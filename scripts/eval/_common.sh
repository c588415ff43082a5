# Shared helpers of scripts/eval/<bench>.sh and scripts/eval_all.sh (sourced, not run).
#
# A benchmark script checks that the benchmark's data is there, answers its questions chunked over the visible
# GPUs (one background process per GPU; resumable: rerun the same command after a crash and each chunk goes on
# where it stopped), merges the chunks back in question order and scores them:
#   answers  $ANSWERS_ROOT/<bench>/<model-name>/answers.jsonl   (chunks/ and logs/ beside it)
#   metrics  $OUTPUT_ROOT/<bench>/<model-name>/metrics.json     (+ the submission file of server-scored sets)
#
# Environment (all optional):
#   PYTHON        python with xmodelvlm's dependencies (default: python, else python3); the repository is put on
#                 PYTHONPATH, so no install is needed
#   BATCH_SIZE    questions per generate() call (default 16)
#   CONV_MODE     prompt template (default v1)
#   VISION_TOWER  a CLIP ViT-L/14-336 directory (default: the tower weights stored in the checkpoint)
#   DTYPE         auto (default: bf16/fp16 on GPU, fp32 on CPU), bfloat16, float16 or float32
#   OUTPUT_ROOT   where metrics go (default ./eval_results)
#   ANSWERS_ROOT  where answers go (default $OUTPUT_ROOT/answers)
#   MODEL_NAME    name in the paths and the answers' model_id (default: the checkpoint folder's name, or
#                 <run>_checkpoint-N for a trainer checkpoint)
#   CUDA_VISIBLE_DEVICES  GPUs to use, one chunk each (unset: every GPU nvidia-smi lists; empty: CPU)
#   CPU_CHUNKS    processes to run with no GPU (default 1; each gets its share of the cores)
#   QUESTION_FILE another question file in the benchmark's format, e.g. mmbench_test_en_20231003.tsv
#                 (single-benchmark scripts only)
#   EXTRA_ARGS    more flags for `python -m xmodelvlm.eval.answer`, e.g. "--max-new-tokens 64 --strict"
#
# Exit status: 0 done; 2 something to fix (data or checkpoint missing, bad input; one line says what);
# 1 a run failed (the log's last lines are shown); 130 interrupted.

XV_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
XV_REPO_ROOT="$(cd "$XV_SCRIPT_DIR/../.." && pwd)"
XV_BENCHMARKS_IN_PAPER_ORDER="gqa mmbench mmbench_cn mme pope sqa textvqa vizwiz mmvet"
XV_DEFAULT_DATA_ROOT="./playground/data/eval"

xv_init() {
    if [ -z "${PYTHON:-}" ]; then
        if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
    fi
    BATCH_SIZE="${BATCH_SIZE:-16}"
    CONV_MODE="${CONV_MODE:-v1}"
    VISION_TOWER="${VISION_TOWER:-}"
    DTYPE="${DTYPE:-auto}"
    OUTPUT_ROOT="${OUTPUT_ROOT:-./eval_results}"
    ANSWERS_ROOT="${ANSWERS_ROOT:-$OUTPUT_ROOT/answers}"
    CPU_CHUNKS="${CPU_CHUNKS:-1}"
    QUESTION_FILE="${QUESTION_FILE:-}"
    EXTRA_ARGS="${EXTRA_ARGS:-}"
    export PYTHONPATH="$XV_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

xv_error() {  # one line on stderr
    echo "error: $*" >&2
}

# The checkpoint must be a directory with a config.json; exits 2 with one line otherwise.
xv_check_checkpoint() {
    local checkpoint="$1"
    if [ ! -d "$checkpoint" ]; then
        xv_error "checkpoint directory not found: $checkpoint (pass the checkpoint directory as the first argument)"
        return 2
    fi
    if [ ! -f "$checkpoint/config.json" ]; then
        xv_error "$checkpoint has no config.json; pass a complete checkpoint directory" \
            "(for a stage-1 output, run stage 2 first)"
        return 2
    fi
}

# LLaVA's get_model_name_from_path: the folder name, or <run>_checkpoint-N.
xv_model_name() {
    if [ -n "${MODEL_NAME:-}" ]; then echo "$MODEL_NAME"; return; fi
    local path="${1%/}"
    local base="${path##*/}"
    if [[ "$base" == checkpoint-* && "$path" == */* ]]; then
        local parent="${path%/*}"
        echo "${parent##*/}_$base"
    else
        echo "$base"
    fi
}

# GPU ids to use, space-separated; empty = no GPU.
xv_gpu_list() {
    if [ "${CUDA_VISIBLE_DEVICES+set}" = set ]; then
        echo "${CUDA_VISIBLE_DEVICES//,/ }"
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | awk '/^GPU [0-9]+:/ {sub(":", "", $2); printf "%s ", $2}'
    fi
}

# xv_run_benchmark BENCH CHECKPOINT [DATA_ROOT]
xv_run_benchmark() {
    local bench="$1" checkpoint="$2" data_root="${3:-$XV_DEFAULT_DATA_ROOT}"
    xv_init
    xv_check_checkpoint "$checkpoint" || return 2

    local question_args=()
    [ -n "$QUESTION_FILE" ] && question_args=(--question-file "$QUESTION_FILE")
    "$PYTHON" -m xmodelvlm.eval.benchmarks "$bench" --data-root "$data_root" "${question_args[@]}" || return 2

    local model_name answers_dir output_dir
    model_name="$(xv_model_name "$checkpoint")"
    answers_dir="$ANSWERS_ROOT/$bench/$model_name"
    output_dir="$OUTPUT_ROOT/$bench/$model_name"
    mkdir -p "$answers_dir/chunks" "$answers_dir/logs" "$output_dir"

    xv_answer_chunks "$bench" "$checkpoint" "$data_root" "$model_name" "$answers_dir" || return $?

    "$PYTHON" -m xmodelvlm.eval.merge --bench "$bench" --data-root "$data_root" "${question_args[@]}" \
        --chunks "${XV_CHUNK_FILES[@]}" --output "$answers_dir/answers.jsonl" --require-complete || return $?
    "$PYTHON" "$XV_REPO_ROOT/eval/score.py" "$bench" --data-root "$data_root" "${question_args[@]}" \
        --answers "$answers_dir/answers.jsonl" --output-dir "$output_dir" || return $?
    echo "$bench: metrics in $output_dir/metrics.json, answers in $answers_dir/answers.jsonl" >&2
}

# Answer in one process per GPU (or CPU_CHUNKS processes on CPU); sets XV_CHUNK_FILES.
xv_answer_chunks() {
    local bench="$1" checkpoint="$2" data_root="$3" model_name="$4" answers_dir="$5"
    local gpus=() devices=() device
    read -r -a gpus <<< "$(xv_gpu_list)"
    if [ "${#gpus[@]}" -gt 0 ]; then
        devices=("${gpus[@]}")
        device=cuda
    else
        local i
        for ((i = 0; i < CPU_CHUNKS; i++)); do devices+=(""); done
        device=cpu
    fi
    local num_chunks="${#devices[@]}"

    local common=(--model-path "$checkpoint" --bench "$bench" --data-root "$data_root" --batch-size "$BATCH_SIZE"
                  --conv-mode "$CONV_MODE" --dtype "$DTYPE" --model-id "$model_name" --device "$device"
                  --num-chunks "$num_chunks")
    [ -n "$VISION_TOWER" ] && common+=(--vision-tower "$VISION_TOWER")
    [ -n "$QUESTION_FILE" ] && common+=(--question-file "$QUESTION_FILE")
    local extra=()
    read -r -a extra <<< "$EXTRA_ARGS"

    XV_CHUNK_FILES=()
    local pids=() logs=() idx
    if [ "$device" = cpu ] && [ "$num_chunks" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
        local cores
        cores="$(nproc 2>/dev/null || echo "$num_chunks")"
        export OMP_NUM_THREADS=$(( cores / num_chunks > 0 ? cores / num_chunks : 1 ))
    fi
    echo "$bench: answering with $model_name in $num_chunks chunk(s) on $device${gpus:+ (GPUs ${gpus[*]})}" >&2
    for ((idx = 0; idx < num_chunks; idx++)); do
        local answers="$answers_dir/chunks/${num_chunks}_${idx}.jsonl" log="$answers_dir/logs/${num_chunks}_${idx}.log"
        XV_CHUNK_FILES+=("$answers")
        logs+=("$log")
        if [ "$num_chunks" -eq 1 ]; then  # one process: show its progress bar here
            CUDA_VISIBLE_DEVICES="${devices[$idx]}" "$PYTHON" -m xmodelvlm.eval.answer "${common[@]}" \
                --chunk-idx "$idx" --answers-file "$answers" "${extra[@]}" || return $?
            return 0
        fi
        CUDA_VISIBLE_DEVICES="${devices[$idx]}" "$PYTHON" -m xmodelvlm.eval.answer "${common[@]}" \
            --chunk-idx "$idx" --answers-file "$answers" --no-progress "${extra[@]}" >"$log" 2>&1 &
        pids+=($!)
    done
    echo "$bench: logs in $answers_dir/logs/" >&2
    trap 'kill "${pids[@]}" 2>/dev/null; wait; echo "interrupted" >&2; exit 130' INT TERM

    local status=0 rc
    for ((idx = 0; idx < num_chunks; idx++)); do
        rc=0
        wait "${pids[$idx]}" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "error: $bench chunk $idx of $num_chunks${gpus:+ (GPU ${devices[$idx]})} failed (exit $rc);" \
                "end of ${logs[$idx]}:" >&2
            tail -n 5 "${logs[$idx]}" | sed 's/^/    /' >&2
            if [ "$rc" -eq 2 ] && [ "$status" -ne 1 ]; then status=2; else status=1; fi
        fi
    done
    trap - INT TERM
    return "$status"
}

# Entry point of the benchmark scripts: xv_main BENCH "$@"
xv_main() {
    local bench="$1"
    shift
    if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
        echo "usage: $(basename "$0") CHECKPOINT [DATA_ROOT (default $XV_DEFAULT_DATA_ROOT)];" \
            "settings: see scripts/eval/_common.sh" >&2
        return 2
    fi
    xv_run_benchmark "$bench" "$@"
}
