"""The benchmark registry: where each benchmark's files live, how to read its questions, how to answer
(token budget, newline cut) and how to score it.

Paths are relative to a data root laid out like LLaVA-1.5's `playground/data/eval/` (the default root):

    gqa/llava_gqa_testdev_balanced.jsonl, gqa/data/images/, gqa/data/testdev_balanced_questions.json
    mmbench/mmbench_dev_20230712.tsv, mmbench/mmbench_dev_cn_20231003.tsv
    MME/llava_mme.jsonl, MME/MME_Benchmark_release_version/
    pope/llava_pope_test.jsonl, pope/val2014/, pope/coco/coco_pope_{adversarial,popular,random}.json
    scienceqa/llava_test_CQM-A.json, scienceqa/images/test/, scienceqa/problems.json, scienceqa/pid_splits.json
    textvqa/llava_textvqa_val_v051_ocr.jsonl, textvqa/train_images/, textvqa/TextVQA_0.5.1_val.json
    vizwiz/llava_test.jsonl, vizwiz/test/
    mm-vet/llava-mm-vet.jsonl, mm-vet/images/

    python -m xmodelvlm.eval.benchmarks BENCH [--data-root DIR] [--question-file FILE]

checks that BENCH's question file and images are there (exit 2 with what to download and where) without importing
torch: the eval scripts run it before they start answering.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from xmodelvlm.errors import ArgumentParser, UserError, run_cli
from xmodelvlm.eval.questions import Question, read_llava_jsonl, read_mmbench_columns, read_mmbench_tsv, \
    read_sqa_conversations
from xmodelvlm.eval.scorers import gqa, mmbench, mme, mmvet, pope, sqa, textvqa, vizwiz
from xmodelvlm.eval.scorers.answers import Answer, read_answers
from xmodelvlm.utils import atomic_write_json

PathLike = Union[str, Path]
DEFAULT_DATA_ROOT = Path("playground/data/eval")
METRICS_FILE = "metrics.json"
# LLaVA-1.5's eval.zip (linked from LLaVA's docs/Evaluation.md) holds every llava_*.jsonl question file.
_LLAVA_EVAL_ZIP = "LLaVA-1.5's eval.zip (see LLaVA docs/Evaluation.md) extracted into the data root"


@dataclass(frozen=True)
class DataFile:
    """A file or folder a benchmark needs, relative to the data root, and how to get it."""

    relpath: str
    source: str                      # what to download, from where
    alternatives: tuple[str, ...] = ()  # other accepted locations, relative to the data root
    is_dir: bool = False

    def find(self, data_root: Path) -> Path | None:
        for relpath in (self.relpath, *self.alternatives):
            path = Path(data_root) / relpath
            if (path.is_dir() if self.is_dir else path.is_file()):
                return path
        return None

    def require(self, data_root: Path, benchmark: str) -> Path:
        path = self.find(data_root)
        if path is None:
            raise UserError(f"{benchmark}: {self.missing_message(data_root)}")
        return path

    def missing_message(self, data_root: Path) -> str:
        return f"missing {Path(data_root) / self.relpath} (download {self.source})"


@dataclass
class ScoringInputs:
    benchmark: "Benchmark"
    data_root: Path
    question_path: Path
    questions: list[Question]
    answers: list[Answer]
    output_dir: Path

    def path(self, data_file: DataFile) -> Path:
        return data_file.require(self.data_root, self.benchmark.name)


QuestionReader = Callable[[Path, Union[Path, None]], list[Question]]
Scorer = Callable[[ScoringInputs], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    question_file: str             # relative to the data root
    image_folder: str | None       # relative to the data root; None when images are embedded (MMBench)
    max_new_tokens: int
    stop_at_newline: bool          # cut the answer at its first newline (never for open-ended MM-Vet)
    question_source: str           # where the question file comes from
    image_source: str | None       # where the images come from
    ground_truth: tuple[DataFile, ...]
    reader: QuestionReader
    scorer: Scorer
    summarizer: Callable[[dict[str, Any]], str]

    def question_path(self, data_root: PathLike = DEFAULT_DATA_ROOT, question_file: PathLike | None = None) -> Path:
        """The question file: the default one, or `question_file` (absolute; else relative to the current
        directory if it exists there; else relative to this benchmark's folder under the data root)."""
        if question_file is None:
            return Path(data_root) / self.question_file
        override = Path(question_file)
        if override.is_absolute() or override.exists():
            return override
        return Path(data_root) / Path(self.question_file).parent / override

    def image_dir(self, data_root: PathLike = DEFAULT_DATA_ROOT) -> Path | None:
        return None if self.image_folder is None else Path(data_root) / self.image_folder

    def read_questions(self, data_root: PathLike = DEFAULT_DATA_ROOT,
                       question_file: PathLike | None = None) -> list[Question]:
        return self.reader(self.question_path(data_root, question_file), self.image_dir(data_root))

    def check_data(self, data_root: PathLike = DEFAULT_DATA_ROOT, question_file: PathLike | None = None, *,
                   for_scoring: bool = False) -> None:
        """Raise one `UserError` line naming every missing file, what to download and where it goes: the
        question file and images for answering, the question file and ground truth for scoring."""
        data_root = Path(data_root)
        problems = []
        question_path = self.question_path(data_root, question_file)
        if not question_path.is_file():
            source = self.question_source if question_file is None else "or fix --question-file"
            problems.append(f"missing {question_path} ({source})")
        if not for_scoring and self.image_folder is not None and not self.image_dir(data_root).is_dir():
            problems.append(f"missing image folder {self.image_dir(data_root)} (download {self.image_source})")
        if for_scoring:
            problems.extend(f.missing_message(data_root) for f in self.ground_truth if f.find(data_root) is None)
        if problems:
            raise UserError(f"{self.name}: " + "; ".join(problems))

    def score(self, data_root: PathLike, answers_path: PathLike | Sequence[PathLike], output_dir: PathLike,
              question_file: PathLike | None = None) -> dict[str, Any]:
        """Score an answers file (or its chunk files); write `output_dir/metrics.json` (+ any submission file)
        and return the metrics."""
        data_root, output_dir = Path(data_root), Path(output_dir)
        answers = read_answers(answers_path)
        self.check_data(data_root, question_file, for_scoring=True)
        question_path = self.question_path(data_root, question_file)
        inputs = ScoringInputs(benchmark=self, data_root=data_root, question_path=question_path,
                               questions=self.read_questions(data_root, question_file), answers=answers,
                               output_dir=output_dir)
        metrics = {"benchmark": self.name, **self.scorer(inputs)}
        atomic_write_json(output_dir / METRICS_FILE, metrics)
        return metrics

    def summarize(self, metrics: dict[str, Any]) -> str:
        """The one-line summary `eval/score.py` prints."""
        return self.summarizer(metrics)


# ---------------------------------------------------------------------------------------------------------
# per-benchmark adapters: resolve ground-truth paths, call the scorer
# ---------------------------------------------------------------------------------------------------------

GQA_GROUND_TRUTH = DataFile("gqa/data/testdev_balanced_questions.json",
                            "testdev_balanced_questions.json from GQA's questions1.2.zip into gqa/data/",
                            alternatives=("gqa/testdev_balanced_questions.json",))
MME_GROUND_TRUTH = DataFile("MME/MME_Benchmark_release_version",
                            "MME_Benchmark_release_version from the MME authors into MME/", is_dir=True)
POPE_LABELS = DataFile("pope/coco", "the POPE label files (output/coco/coco_pope_*.json of the POPE repository) "
                       "into pope/coco/", is_dir=True)
SQA_PROBLEMS = DataFile("scienceqa/problems.json", "problems.json from the ScienceQA repository "
                        "(data/scienceqa/) into scienceqa/")
SQA_SPLITS = DataFile("scienceqa/pid_splits.json", "pid_splits.json from the ScienceQA repository "
                      "(data/scienceqa/) into scienceqa/")
TEXTVQA_ANNOTATIONS = DataFile("textvqa/TextVQA_0.5.1_val.json",
                               "TextVQA_0.5.1_val.json from textvqa.org into textvqa/")


def _score_gqa(inputs: ScoringInputs) -> dict[str, Any]:
    return gqa.score_gqa(inputs.questions, inputs.answers, inputs.path(GQA_GROUND_TRUTH))


def _score_mme(inputs: ScoringInputs) -> dict[str, Any]:
    return mme.score_mme(inputs.questions, inputs.answers, inputs.path(MME_GROUND_TRUTH))


def _score_pope(inputs: ScoringInputs) -> dict[str, Any]:
    labels_dir = inputs.path(POPE_LABELS)
    label_files = {category: labels_dir / f"coco_pope_{category}.json" for category in pope.POPE_CATEGORIES}
    return pope.score_pope(inputs.questions, inputs.answers, label_files)


def _score_sqa(inputs: ScoringInputs) -> dict[str, Any]:
    return sqa.score_sqa(inputs.questions, inputs.answers, inputs.path(SQA_PROBLEMS), inputs.path(SQA_SPLITS))


def _score_textvqa(inputs: ScoringInputs) -> dict[str, Any]:
    return textvqa.score_textvqa(inputs.questions, inputs.answers, inputs.path(TEXTVQA_ANNOTATIONS))


def _score_mmbench(inputs: ScoringInputs) -> dict[str, Any]:
    return mmbench.score_mmbench(inputs.questions, inputs.answers, inputs.output_dir,
                                 read_mmbench_columns(inputs.question_path))


def _score_vizwiz(inputs: ScoringInputs) -> dict[str, Any]:
    return vizwiz.write_vizwiz_submission(inputs.questions, inputs.answers, inputs.output_dir)


def _score_mmvet(inputs: ScoringInputs) -> dict[str, Any]:
    return mmvet.write_mmvet_results(inputs.questions, inputs.answers, inputs.output_dir)


def _read_mmbench_en(path: Path, image_folder: Path | None) -> list[Question]:
    return read_mmbench_tsv(path, lang="en")


def _read_mmbench_cn(path: Path, image_folder: Path | None) -> list[Question]:
    return read_mmbench_tsv(path, lang="cn")


# Short answers ("yes", "2", "B") need few tokens; 128 is LLaVA's default for these sets. Multiple-choice sets
# get 256 so an answer that explains itself before the letter is not cut before the letter. MM-Vet is
# open-ended and graded by GPT-4: LLaVA's model_vqa gives it 1024 tokens, and it is never cut at a newline.
SHORT_ANSWER_TOKENS = 128
MULTIPLE_CHOICE_TOKENS = 256
OPEN_ENDED_TOKENS = 1024

_BENCHMARK_LIST = (
    Benchmark(name="gqa", question_file="gqa/llava_gqa_testdev_balanced.jsonl", image_folder="gqa/data/images",
              max_new_tokens=SHORT_ANSWER_TOKENS, stop_at_newline=True, question_source=_LLAVA_EVAL_ZIP,
              image_source="GQA images.zip from the GQA site, extracted to gqa/data/images/",
              ground_truth=(GQA_GROUND_TRUTH,), reader=read_llava_jsonl, scorer=_score_gqa,
              summarizer=gqa.summarize_gqa),
    Benchmark(name="mmbench", question_file="mmbench/mmbench_dev_20230712.tsv", image_folder=None,
              max_new_tokens=MULTIPLE_CHOICE_TOKENS, stop_at_newline=True,
              question_source="mmbench_dev_20230712.tsv from the MMBench site into mmbench/", image_source=None,
              ground_truth=(), reader=_read_mmbench_en, scorer=_score_mmbench,
              summarizer=lambda metrics: mmbench.summarize_mmbench(metrics, "mmbench")),
    Benchmark(name="mmbench_cn", question_file="mmbench/mmbench_dev_cn_20231003.tsv", image_folder=None,
              max_new_tokens=MULTIPLE_CHOICE_TOKENS, stop_at_newline=True,
              question_source="mmbench_dev_cn_20231003.tsv from the MMBench site into mmbench/", image_source=None,
              ground_truth=(), reader=_read_mmbench_cn, scorer=_score_mmbench,
              summarizer=lambda metrics: mmbench.summarize_mmbench(metrics, "mmbench_cn")),
    Benchmark(name="mme", question_file="MME/llava_mme.jsonl", image_folder="MME/MME_Benchmark_release_version",
              max_new_tokens=SHORT_ANSWER_TOKENS, stop_at_newline=True, question_source=_LLAVA_EVAL_ZIP,
              image_source="MME_Benchmark_release_version from the MME authors into MME/",
              ground_truth=(MME_GROUND_TRUTH,), reader=read_llava_jsonl, scorer=_score_mme,
              summarizer=mme.summarize_mme),
    Benchmark(name="pope", question_file="pope/llava_pope_test.jsonl", image_folder="pope/val2014",
              max_new_tokens=SHORT_ANSWER_TOKENS, stop_at_newline=True, question_source=_LLAVA_EVAL_ZIP,
              image_source="COCO val2014 images into pope/val2014/",
              ground_truth=(POPE_LABELS,), reader=read_llava_jsonl, scorer=_score_pope,
              summarizer=pope.summarize_pope),
    Benchmark(name="sqa", question_file="scienceqa/llava_test_CQM-A.json", image_folder="scienceqa/images/test",
              max_new_tokens=MULTIPLE_CHOICE_TOKENS, stop_at_newline=True, question_source=_LLAVA_EVAL_ZIP,
              image_source="the ScienceQA test images (images/test of the ScienceQA repository) into "
                           "scienceqa/images/test/",
              ground_truth=(SQA_PROBLEMS, SQA_SPLITS), reader=read_sqa_conversations, scorer=_score_sqa,
              summarizer=sqa.summarize_sqa),
    Benchmark(name="textvqa", question_file="textvqa/llava_textvqa_val_v051_ocr.jsonl",
              image_folder="textvqa/train_images", max_new_tokens=SHORT_ANSWER_TOKENS, stop_at_newline=True,
              question_source=_LLAVA_EVAL_ZIP,
              image_source="TextVQA train_val_images.zip, extracted to textvqa/train_images/",
              ground_truth=(TEXTVQA_ANNOTATIONS,), reader=read_llava_jsonl, scorer=_score_textvqa,
              summarizer=textvqa.summarize_textvqa),
    Benchmark(name="vizwiz", question_file="vizwiz/llava_test.jsonl", image_folder="vizwiz/test",
              max_new_tokens=SHORT_ANSWER_TOKENS, stop_at_newline=True, question_source=_LLAVA_EVAL_ZIP,
              image_source="VizWiz test.zip, extracted to vizwiz/test/",
              ground_truth=(), reader=read_llava_jsonl, scorer=_score_vizwiz, summarizer=vizwiz.summarize_vizwiz),
    Benchmark(name="mmvet", question_file="mm-vet/llava-mm-vet.jsonl", image_folder="mm-vet/images",
              max_new_tokens=OPEN_ENDED_TOKENS, stop_at_newline=False, question_source=_LLAVA_EVAL_ZIP,
              image_source="mm-vet.zip from the MM-Vet repository, extracted to mm-vet/ (images in mm-vet/images/)",
              ground_truth=(), reader=read_llava_jsonl, scorer=_score_mmvet, summarizer=mmvet.summarize_mmvet),
)
BENCHMARKS: dict[str, Benchmark] = {benchmark.name: benchmark for benchmark in _BENCHMARK_LIST}


def get_benchmark(name: str) -> Benchmark:
    """Look a benchmark up by its exact name."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}") from None


def main(argv: list[str] | None = None) -> None:
    """The data check of `python -m xmodelvlm.eval.answer --check-data`, in a second instead of the seconds that
    importing torch and transformers takes."""
    p = ArgumentParser(prog="python -m xmodelvlm.eval.benchmarks",
                       description="check that a benchmark's question file and images are present")
    p.add_argument("bench", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help=f"(default: {DEFAULT_DATA_ROOT})")
    p.add_argument("--question-file", default=None, help="another question file in the benchmark's format")
    args = p.parse_args(argv)
    get_benchmark(args.bench).check_data(args.data_root, args.question_file)


if __name__ == "__main__":
    run_cli(main)
