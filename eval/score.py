#!/usr/bin/env python
"""Score an answers file for one benchmark (LLaVA-1.5 protocol) and write OUT/metrics.json.

    python eval/score.py pope --data-root playground/data/eval --answers answers/pope.jsonl --output-dir out/pope

Prints one summary line to stdout (warnings about missing/unknown/duplicate/failed answers go to stderr).
Benchmarks scored on a server (MMBench test, VizWiz, MM-Vet) also get their submission file in OUT.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("xmodelvlm") is None:
    # Run from a checkout without `pip install -e .`: python puts eval/ (not the repo root) on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xmodelvlm.errors import run_cli  # noqa: E402
from xmodelvlm.eval.benchmarks import BENCHMARKS, DEFAULT_DATA_ROOT, get_benchmark  # noqa: E402
from xmodelvlm.eval.scorers.answers import coverage_warnings  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", help=f"one of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help=f"LLaVA-1.5 eval data folder (default: {DEFAULT_DATA_ROOT})")
    parser.add_argument("--answers", type=Path, nargs="+", required=True,
                        help="answers JSONL file, or several chunk files")
    parser.add_argument("--output-dir", type=Path, required=True, help="where metrics.json goes")
    parser.add_argument("--question-file", type=Path, default=None,
                        help="another question file (e.g. the MMBench test TSV): absolute, relative to the current "
                             "folder, or relative to the benchmark's folder under the data root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    benchmark = get_benchmark(args.benchmark)
    metrics = benchmark.score(args.data_root, args.answers, args.output_dir, question_file=args.question_file)
    for warning in coverage_warnings(metrics):
        print(warning, file=sys.stderr)
    print(benchmark.summarize(metrics), flush=True)
    return metrics


if __name__ == "__main__":
    run_cli(main)
