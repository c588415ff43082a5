"""scripts/eval/<bench>.sh and scripts/eval_all.sh end to end on a tiny checkpoint, and the results table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval_fixtures import make_mmbench, make_pope, write_image
from xmodelvlm.errors import UserError
from xmodelvlm.eval.report import BENCHMARK_ORDER, build_results, main as report_main, parse_statuses

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OUTPUT_ROOT=str(tmp_path / "results"),
               BATCH_SIZE="4", EXTRA_ARGS="--max-new-tokens 3", TOKENIZERS_PARALLELISM="false")
    env.pop("MODEL_NAME", None)
    env.pop("BENCHMARKS", None)
    env.update(extra)
    return env


def run_script(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------
# benchmark scripts
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pope_script_answers_in_two_chunks_merges_and_scores(tiny_checkpoint, data_root, tmp_path) -> None:
    make_pope(data_root)
    for qid in range(1, 13):
        write_image(data_root / f"pope/val2014/COCO_val2014_{qid:012d}.jpg", size=(6 + qid, 9))
    result = run_script([SCRIPTS / "eval/pope.sh", tiny_checkpoint, data_root], script_env(tmp_path, CPU_CHUNKS="2"),
                        tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pope: F1 ")  # the scorer's summary line
    name = tiny_checkpoint.name
    metrics = json.loads((tmp_path / f"results/pope/{name}/metrics.json").read_text())
    assert metrics["num_questions"] == 12 and metrics["missing"] == 0 and "f1" in metrics
    answers_dir = tmp_path / f"results/answers/pope/{name}"
    assert sorted(p.name for p in (answers_dir / "chunks").iterdir()) == ["2_0.jsonl", "2_1.jsonl"]
    merged = [json.loads(line) for line in (answers_dir / "answers.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in merged] == list(range(1, 13))
    assert {r["model_id"] for r in merged} == {name}


@pytest.mark.slow
def test_mmbench_script_writes_submission_and_circular_accuracy(tiny_checkpoint, data_root, tmp_path) -> None:
    make_mmbench(data_root)
    result = run_script([SCRIPTS / "eval/mmbench.sh", tiny_checkpoint, data_root],
                        script_env(tmp_path, MODEL_NAME="tiny-mm"), tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "results/mmbench/tiny-mm"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_groups"] == 2 and "accuracy" in metrics and metrics["missing"] == 0
    assert (out / "submission.xlsx").is_file()
    answers = [json.loads(line) for line in
               (tmp_path / "results/answers/mmbench/tiny-mm/answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [0, 1_000_000, 2_000_000, 1, 1_000_001]
    assert answers[0]["option_char"] == ["A", "B", "C"] and answers[3]["options"] == ["cat", "dog"]
    assert all(a["model_id"] == "tiny-mm" for a in answers)


@pytest.mark.slow
def test_missing_dataset_is_one_line_exit_2(tiny_checkpoint, data_root, tmp_path) -> None:
    result = run_script([SCRIPTS / "eval/pope.sh", tiny_checkpoint, data_root], script_env(tmp_path), tmp_path)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: pope: missing")
    assert "llava_pope_test.jsonl" in lines[0] and "val2014" in lines[0]
    assert not (tmp_path / "results").exists()


def test_missing_checkpoint_and_usage_are_one_line_exit_2(data_root, tmp_path) -> None:
    result = run_script([SCRIPTS / "eval/sqa.sh", tmp_path / "nope", data_root], script_env(tmp_path), tmp_path)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [f"error: checkpoint directory not found: {tmp_path / 'nope'} "
                                          "(pass the checkpoint directory as the first argument)"]
    usage = run_script([SCRIPTS / "eval/gqa.sh"], script_env(tmp_path), tmp_path)
    assert usage.returncode == 2 and error_lines(usage.stderr)[0].startswith("usage: gqa.sh CHECKPOINT")


@pytest.mark.parametrize("visible, expected", [("0,3", "0 3"), ("", "")])
def test_gpu_list_follows_cuda_visible_devices(visible, expected) -> None:
    result = subprocess.run(["bash", "-c", f"source {SCRIPTS}/eval/_common.sh; xv_gpu_list"], capture_output=True,
                            text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=visible))
    assert result.stdout.split() == expected.split()


@pytest.mark.parametrize("path, name", [("/x/runs/xmodelvlm-1.1b/", "xmodelvlm-1.1b"),
                                        ("runs/ft/checkpoint-500", "ft_checkpoint-500")])
def test_model_name_as_llava(path, name) -> None:
    env = dict(os.environ)
    env.pop("MODEL_NAME", None)
    result = subprocess.run(["bash", "-c", f"source {SCRIPTS}/eval/_common.sh; xv_model_name {path}"],
                            capture_output=True, text=True, env=env)
    assert result.stdout.strip() == name


@pytest.mark.slow
def test_eval_all_skips_benchmarks_without_data(tiny_checkpoint, data_root, tmp_path) -> None:
    result = run_script([SCRIPTS / "eval_all.sh", tiny_checkpoint, data_root], script_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert sum(line.startswith("skipped ") for line in result.stderr.splitlines()) == 9
    assert result.stdout.splitlines()[0].startswith("| Model | GQA | MMBench | MMBench-CN | MME | POPE |")
    results = json.loads((tmp_path / f"results/{tiny_checkpoint.name}/results.json").read_text())
    assert {entry["status"] for entry in results["benchmarks"].values()} == {"skipped"}


# ---------------------------------------------------------------------------------------------------------
# the table / results.json builder
# ---------------------------------------------------------------------------------------------------------

FAKE_METRICS = {
    "gqa": {"accuracy": 58.34, "binary": 70.0},
    "mmbench": {"accuracy": 52.04, "num_groups": 10},
    "mmbench_cn": {"num_groups": 0, "num_answered": 40},      # test split: no ground truth → submission only
    "mme": {"perception": 1250.71, "cognition": 250.0},
    "pope": {"f1": 85.91, "accuracy": 86.0},
    "sqa": {"img_accuracy": 53.3, "accuracy": 60.0},
    "vizwiz": {"num_answers": 8000, "submission": "x.json"},
    "mmvet": {"num_answers": 218},
}


def write_fake_metrics(root: Path, model: str) -> None:
    for bench, metrics in FAKE_METRICS.items():
        path = root / bench / model / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(metrics))


def test_results_table_in_paper_order_with_headline_numbers(tmp_path) -> None:
    write_fake_metrics(tmp_path, "m")
    statuses = {bench: "ok" for bench in FAKE_METRICS}
    statuses["textvqa"] = "skipped"
    results = build_results(statuses, tmp_path, "m", checkpoint="/ckpt/m")
    lines = results["table"].splitlines()
    assert lines[0] == ("| Model | GQA | MMBench | MMBench-CN | MME | POPE | SQA-IMG | TextVQA | VizWiz | MM-Vet |")
    assert lines[2] == "| m | 58.3 | 52.0 | submit (40) | 1250.7 | 85.9 | 53.3 | – | submit (8000) | submit (218) |"
    assert lines[3] == "| Xmodel-VLM (paper) | 58.3 | 52 | 45.7 | 1250.7 | 85.9 | 53.3 | 39.9 | 41.7 | 21.8 |"
    assert "skipped (data missing): TextVQA" in results["table"]
    assert results["benchmarks"]["mme"]["value"] == pytest.approx(1250.71)
    assert results["benchmarks"]["pope"]["metric"] == "f1"
    assert list(results["benchmarks"]) == list(BENCHMARK_ORDER)


def test_results_ok_without_metrics_counts_as_failed(tmp_path) -> None:
    results = build_results({"gqa": "ok", "pope": "failed"}, tmp_path, "m")
    gqa = results["benchmarks"]["gqa"]
    assert gqa["status"] == "failed" and "metrics.json" in gqa["error"]
    assert results["benchmarks"]["mme"]["status"] == "not run"
    assert "failed: GQA, POPE" in results["table"]


def test_report_cli_writes_results_json(tmp_path, capsys) -> None:
    write_fake_metrics(tmp_path, "m")
    report_main(["table", "--output-root", str(tmp_path), "--model-name", "m", "--status", "gqa=ok",
                 "--status", "pope=ok"])
    assert "| m | 58.3 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "m/results.json").read_text())
    assert saved["benchmarks"]["pope"]["value"] == pytest.approx(85.91) and saved["model"] == "m"
    with pytest.raises(UserError, match="BENCH=STATUS"):
        parse_statuses(["pope:ok"])
