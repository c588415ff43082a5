#!/usr/bin/env bash
# Evaluate a checkpoint on the nine benchmarks of the paper and print the results table.
#   scripts/eval_all.sh CHECKPOINT [DATA_ROOT (default ./playground/data/eval)]
# Runs scripts/eval/<bench>.sh for each benchmark (GQA, MMBench, MMBench-CN, MME, POPE, SQA-IMG, TextVQA,
# VizWiz, MM-Vet); one whose data is missing is reported and skipped. Prints a markdown table in the paper's
# column order and writes $OUTPUT_ROOT/<model-name>/results.json. Settings: scripts/eval/_common.sh
# (BENCHMARKS="pope sqa" runs a subset; QUESTION_FILE is ignored here).
# Exit status: 0 when every benchmark with data was scored, 1 when one failed, 2 on a bad checkpoint.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/eval/_common.sh"

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    echo "usage: $(basename "$0") CHECKPOINT [DATA_ROOT (default $XV_DEFAULT_DATA_ROOT)]" >&2
    exit 2
fi
checkpoint="$1"
data_root="${2:-$XV_DEFAULT_DATA_ROOT}"
unset QUESTION_FILE
xv_init
xv_check_checkpoint "$checkpoint" || exit 2
model_name="$(xv_model_name "$checkpoint")"
read -r -a benchmarks <<< "${BENCHMARKS:-$XV_BENCHMARKS_IN_PAPER_ORDER}"

# One python call checks every benchmark's data (the benchmark scripts check again, cheaply).
present=" $("$PYTHON" -m xmodelvlm.eval.report check-data --data-root "$data_root" "${benchmarks[@]}") "

statuses=()
failed=0
for bench in "${benchmarks[@]}"; do
    if [[ "$present" != *" $bench "* ]]; then
        statuses+=(--status "$bench=skipped")
        continue
    fi
    echo "=== $bench" >&2
    rc=0
    bash "$XV_SCRIPT_DIR/$bench.sh" "$checkpoint" "$data_root" || rc=$?
    if [ "$rc" -eq 130 ]; then exit 130; fi
    if [ "$rc" -eq 0 ]; then
        statuses+=(--status "$bench=ok")
    else
        echo "=== $bench failed (exit $rc); going on with the others" >&2
        statuses+=(--status "$bench=failed")
        failed=1
    fi
done

"$PYTHON" -m xmodelvlm.eval.report table --output-root "$OUTPUT_ROOT" --model-name "$model_name" \
    --checkpoint "$checkpoint" "${statuses[@]}"
exit "$failed"
