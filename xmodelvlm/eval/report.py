"""The results table of `scripts/eval_all.sh`: which benchmarks have their data, and the headline numbers.

    python -m xmodelvlm.eval.report check-data --data-root playground/data/eval [BENCH ...]
        prints the benchmarks whose data is present (stdout, space-separated); one line per missing one (stderr)
    python -m xmodelvlm.eval.report table --output-root eval_results --model-name M \
            --status gqa=ok --status mme=skipped ... [--results-file eval_results/M/results.json]
        prints a markdown table in the paper's column order and writes results.json (atomically)

Headline numbers (as the paper reports them): GQA accuracy, MMBench(-CN) accuracy (CircularEval), MME
perception score, POPE F1 (mean over the three categories), SQA-IMG accuracy, TextVQA accuracy; VizWiz and
MM-Vet are scored by their servers, so the table shows "submit" with the number of answers.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from xmodelvlm.errors import UserError, run_cli
from xmodelvlm.utils import atomic_write_json


@dataclass(frozen=True)
class Column:
    benchmark: str
    title: str
    metric: str | None  # the headline key in metrics.json; None = scored on a server (submission only)


COLUMNS = (
    Column("gqa", "GQA", "accuracy"),
    Column("mmbench", "MMBench", "accuracy"),
    Column("mmbench_cn", "MMBench-CN", "accuracy"),
    Column("mme", "MME", "perception"),
    Column("pope", "POPE", "f1"),
    Column("sqa", "SQA-IMG", "img_accuracy"),
    Column("textvqa", "TextVQA", "accuracy"),
    Column("vizwiz", "VizWiz", None),
    Column("mmvet", "MM-Vet", None),
)
BENCHMARK_ORDER = tuple(column.benchmark for column in COLUMNS)
# Xmodel-VLM (1.1B, 144 image tokens) as published (arXiv 2405.09215), for comparison.
PAPER_XMODEL_VLM = {"gqa": 58.3, "mmbench": 52.0, "mmbench_cn": 45.7, "mme": 1250.7, "pope": 85.9, "sqa": 53.3,
                    "textvqa": 39.9, "vizwiz": 41.7, "mmvet": 21.8}
STATUSES = ("ok", "skipped", "failed")
METRICS_FILE = "metrics.json"


def metrics_path(output_root: str | Path, benchmark: str, model_name: str) -> Path:
    return Path(output_root) / benchmark / model_name / METRICS_FILE


def headline(column: Column, metrics: Mapping[str, Any]) -> tuple[float | None, str]:
    """(number or None, table cell) of one benchmark's metrics."""
    value = metrics.get(column.metric) if column.metric else None
    if isinstance(value, (int, float)):
        return float(value), f"{value:.1f}"
    answered = metrics.get("num_answers", metrics.get("num_answered"))
    return None, "submit" if answered is None else f"submit ({answered})"


def build_results(statuses: Mapping[str, str], output_root: str | Path, model_name: str,
                  checkpoint: str | None = None) -> dict[str, Any]:
    """results.json: per benchmark its status, headline value and cell, and the metrics file it came from.
    A benchmark marked ok whose metrics.json is missing or unreadable counts as failed."""
    benchmarks: dict[str, Any] = {}
    for column in COLUMNS:
        status = statuses.get(column.benchmark, "not run")
        entry: dict[str, Any] = {"status": status, "metric": column.metric or "submission", "value": None,
                                 "cell": {"skipped": "–", "failed": "failed"}.get(status, "–")}
        if status == "ok":
            path = metrics_path(output_root, column.benchmark, model_name)
            metrics = _read_metrics(path)
            if metrics is None:
                entry.update(status="failed", cell="failed", error=f"no readable {path}")
            else:
                entry["value"], entry["cell"] = headline(column, metrics)
                entry["metrics_file"] = str(path)
        benchmarks[column.benchmark] = entry
    results = {"model": model_name, "checkpoint": checkpoint, "columns": [c.title for c in COLUMNS],
               "benchmarks": benchmarks, "paper": dict(PAPER_XMODEL_VLM)}
    results["table"] = markdown_table(results)
    return results


def _read_metrics(path: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def markdown_table(results: Mapping[str, Any]) -> str:
    """The model's row and the paper's, in the paper's column order, plus a note on skipped/failed ones."""
    header = "| Model | " + " | ".join(c.title for c in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    ours = f"| {results['model']} | " + " | ".join(results["benchmarks"][c.benchmark]["cell"] for c in COLUMNS) + " |"
    paper = "| Xmodel-VLM (paper) | " + " | ".join(f"{PAPER_XMODEL_VLM[c.benchmark]:g}" for c in COLUMNS) + " |"
    lines = [header, rule, ours, paper]
    for status, note in (("skipped", "skipped (data missing)"), ("failed", "failed"), ("not run", "not run")):
        names = [c.title for c in COLUMNS if results["benchmarks"][c.benchmark]["status"] == status]
        if names:
            lines.append(f"\n{note}: {', '.join(names)}")
    return "\n".join(lines)


def present_benchmarks(data_root: str | Path, names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(benchmarks whose question file and images are there, {missing benchmark: what to download})."""
    from xmodelvlm.eval.benchmarks import get_benchmark

    present, missing = [], {}
    for name in names:
        try:
            get_benchmark(name).check_data(data_root)
            present.append(name)
        except UserError as exc:
            missing[name] = str(exc)
    return present, missing


def parse_statuses(items: Sequence[str]) -> dict[str, str]:
    statuses = {}
    for item in items:
        name, _, status = item.partition("=")
        if name not in BENCHMARK_ORDER or status not in STATUSES:
            raise UserError(f"--status {item!r}: expected BENCH=STATUS with BENCH one of {', '.join(BENCHMARK_ORDER)} "
                            f"and STATUS one of {', '.join(STATUSES)}")
        statuses[name] = status
    return statuses


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-data", help="which benchmarks have their data")
    check.add_argument("--data-root", type=Path, default=Path("playground/data/eval"))
    check.add_argument("benchmarks", nargs="*", default=list(BENCHMARK_ORDER))
    table = commands.add_parser("table", help="markdown table + results.json")
    table.add_argument("--output-root", type=Path, required=True)
    table.add_argument("--model-name", required=True)
    table.add_argument("--checkpoint", default=None)
    table.add_argument("--status", action="append", default=[], metavar="BENCH=STATUS",
                       help=f"STATUS: {', '.join(STATUSES)}; repeat per benchmark")
    table.add_argument("--results-file", type=Path, default=None,
                       help="default: OUTPUT_ROOT/MODEL_NAME/results.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Any:
    args = parse_args(argv)
    if args.command == "check-data":
        unknown = [name for name in args.benchmarks if name not in BENCHMARK_ORDER]
        if unknown:
            raise UserError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARK_ORDER)}")
        present, missing = present_benchmarks(args.data_root, args.benchmarks)
        for name, reason in missing.items():
            print(f"skipped {reason}", file=sys.stderr)  # reason starts with the name
        print(" ".join(present))
        return present
    results = build_results(parse_statuses(args.status), args.output_root, args.model_name, args.checkpoint)
    results_file = args.results_file or args.output_root / args.model_name / "results.json"
    atomic_write_json(results_file, results)
    print(results["table"])
    print(f"\nresults written to {results_file}", file=sys.stderr)
    return results


if __name__ == "__main__":
    run_cli(main)
