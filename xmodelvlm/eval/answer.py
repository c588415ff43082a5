"""Answer a benchmark's questions with a checkpoint: batched, chunkable over GPUs, resumable.

    python -m xmodelvlm.eval.answer --model-path CKPT --bench pope --data-root playground/data/eval \
        --answers-file answers/pope.jsonl [--batch-size 16] [--num-chunks 4 --chunk-idx 0]

Prompts are built as LLaVA-1.5's model_vqa_loader / model_vqa_science / model_vqa_mmbench build them: the
question (from the benchmark's reader, suffix included) is the first user message of `conv_templates[conv_mode]`,
behind `<image>\\n` when the question has an image, followed by an open assistant turn; decoding is greedy by
default and stops at `</s>`. Batches hold questions of similar prompt length (sorted, left-padded), so a batch
pads little; the answers equal those of batch size 1.

The answers file is LLaVA's JSONL (`question_id, prompt, text, answer_id, model_id, metadata`), appended one batch
at a time (flushed and fsynced), so a killed run loses at most the batch in flight and a rerun resumes: answered
questions are skipped, a half-written last line is dropped, answers that failed (image not loadable) are retried.
When the chunk is complete the file is rewritten in question order. A missing or corrupt image gives an answer
with empty text and `metadata.error` (scored as wrong) and the run goes on; `--strict` stops instead (exit 2).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from xmodelvlm.constants import DEFAULT_IMAGE_TOKEN
from xmodelvlm.data.conversation import get_conv_template
from xmodelvlm.data.image import process_images
from xmodelvlm.data.tokenization import tokenizer_image_token
from xmodelvlm.errors import UserError, run_cli
from xmodelvlm.eval.merge import (AnswerLine, ids_are_unique, order_answers, question_key, read_answer_lines,
                                  record_key, write_answer_lines)
from xmodelvlm.eval.questions import ImageLoadError, Question

MMBENCH_NAMES = ("mmbench", "mmbench_cn")


# ---------------------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------------------

def build_prompt(question: Question, conv_mode: str = "v1") -> str:
    """The full prompt text: `<image>\\n` + question as the first user turn, then an open assistant turn."""
    conv = get_conv_template(conv_mode)
    user_message = question.text if question.image is None else f"{DEFAULT_IMAGE_TOKEN}\n{question.text}"
    conv.append_message(conv.roles[0], user_message)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def build_prompts(questions: Sequence[Question], tokenizer, conv_mode: str = "v1") -> list[list[int]]:
    """Token ids of each question's prompt, with one IMAGE_TOKEN_INDEX placeholder per image."""
    return [tokenizer_image_token(build_prompt(q, conv_mode), tokenizer) for q in questions]


# ---------------------------------------------------------------------------------------------------------
# one batch
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodingSettings:
    max_new_tokens: int
    stop_at_newline: bool = True   # cut the answer at its first newline (not for open-ended MM-Vet)
    temperature: float = 0.0       # 0 = greedy
    top_p: float | None = None
    num_beams: int = 1


@dataclass
class PreparedBatch:
    """A batch ready for `generate`: the questions whose images loaded, their padded prompts and pixels, and
    the questions that failed (with the reason)."""

    questions: list[Question]
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    images: torch.Tensor | None
    failed: list[tuple[Question, str]]


class NewlineStop(StoppingCriteria):
    """Stop a row once its answer up to the first newline is settled: the last token holds a newline and some
    non-blank text came before it. The answer is cut there anyway, so this only saves tokens, and it is
    conservative (a token it cannot classify for sure counts as blank, which only delays the stop)."""

    def __init__(self, tokenizer, device: torch.device):
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(tokenizer.all_special_ids)
        newline = [piece == "<0x0A>" or "\n" in piece for piece in pieces]
        # A byte-fallback piece may be part of a multi-byte whitespace character: not surely text.
        text = [token_id not in special and not piece.startswith("<0x") and bool(piece.replace("\u2581", " ").strip())
                for token_id, piece in enumerate(pieces)]
        self.newline = torch.tensor(newline, dtype=torch.bool, device=device)
        self.text = torch.tensor(text, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        # With inputs_embeds, generate() hands stopping criteria only the new tokens.
        last_is_newline = self.newline[input_ids[:, -1]]
        text_before = self.text[input_ids[:, :-1]].any(dim=1)
        return last_is_newline & text_before


def clean_answer(text: str, stop_at_newline: bool) -> str:
    """LLaVA's cleanup (strip), and the cut at the first newline for short-answer benchmarks."""
    text = text.strip()
    if stop_at_newline:
        text = text.split("\n", 1)[0].strip()
    return text


class Answerer:
    """A loaded model plus what it needs to answer batches of questions."""

    def __init__(self, tokenizer, model, image_processor, settings: DecodingSettings, conv_mode: str = "v1",
                 strict: bool = False):
        self.tokenizer, self.model, self.image_processor = tokenizer, model, image_processor
        self.settings, self.conv_mode, self.strict = settings, conv_mode, strict
        self.device = model.device
        self.pixel_dtype = next(model.get_vision_tower().parameters()).dtype
        self.newline_stop = (NewlineStop(tokenizer, self.device)
                             if settings.stop_at_newline and settings.num_beams == 1 else None)

    def prompt_ids(self, questions: Sequence[Question]) -> list[list[int]]:
        return build_prompts(questions, self.tokenizer, self.conv_mode)

    def prepared_length(self, ids: list[int]) -> int:
        """The prompt's length in the LM once each image placeholder became its image tokens."""
        placeholders = sum(1 for t in ids if t < 0)
        return len(ids) + placeholders * (self.model.num_image_tokens - 1)

    def prepare(self, questions: Sequence[Question], prompt_ids: Sequence[list[int]]) -> PreparedBatch:
        """Load and preprocess the batch's images (CPU work, run ahead in a thread) and left-pad its prompts."""
        kept, kept_ids, pil_images, failed = [], [], [], []
        for question, ids in zip(questions, prompt_ids):
            if question.image is not None:
                try:
                    pil_images.append(question.image.load())
                except ImageLoadError as exc:
                    self._fail_or_record(failed, question, str(exc))
                    continue
            kept.append(question)
            kept_ids.append(ids)
        images = None
        if pil_images:
            images, kept, kept_ids = self._process_images(pil_images, kept, kept_ids, failed)
        if not kept:
            return PreparedBatch([], None, None, None, failed)
        width = max(len(ids) for ids in kept_ids)
        input_ids = torch.full((len(kept), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(kept), width), dtype=torch.long)
        for row, ids in enumerate(kept_ids):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        return PreparedBatch(kept, input_ids, attention_mask, images, failed)

    def _process_images(self, pil_images, questions, prompt_ids, failed):
        try:
            return process_images(pil_images, self.image_processor, self.model.config), questions, prompt_ids
        except Exception:  # one odd image (e.g. zero-sized) must not sink the batch: find it
            pass
        pixels, kept, kept_ids = [], [], []
        images = iter(pil_images)
        for question, ids in zip(questions, prompt_ids):
            if question.image is not None:
                try:
                    pixels.append(process_images([next(images)], self.image_processor, self.model.config))
                except Exception as exc:  # noqa: BLE001 - the processor raises many kinds
                    reason = f"question {question.question_id!r}: cannot preprocess image " \
                             f"{question.image.describe()} ({type(exc).__name__}: {exc})"
                    self._fail_or_record(failed, question, reason)
                    continue
            kept.append(question)
            kept_ids.append(ids)
        return (torch.cat(pixels) if pixels else None), kept, kept_ids

    def _fail_or_record(self, failed: list, question: Question, reason: str) -> None:
        if self.strict:
            raise UserError(f"{reason}; drop --strict to record it as a failed answer and go on")
        failed.append((question, reason))

    def generate(self, batch: PreparedBatch) -> list[str]:
        """Answer texts of `batch.questions`, in order."""
        if not batch.questions:
            return []
        s = self.settings
        kwargs = dict(max_new_tokens=s.max_new_tokens, num_beams=s.num_beams, use_cache=True,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.newline_stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([self.newline_stop])
        images = None if batch.images is None else batch.images.to(self.device, self.pixel_dtype)
        output = self.model.generate(batch.input_ids.to(self.device), images=images,
                                     attention_mask=batch.attention_mask.to(self.device), **kwargs)
        new_tokens = output[:, batch.input_ids.shape[1]:].tolist()
        return [self.decode(tokens) for tokens in new_tokens]

    def decode(self, tokens: list[int]) -> str:
        eos = self.tokenizer.eos_token_id
        if eos in tokens:
            tokens = tokens[:tokens.index(eos)]
        return clean_answer(self.tokenizer.decode(tokens, skip_special_tokens=True), self.settings.stop_at_newline)


def answer_record(question: Question, text: str, model_id: str, benchmark: str, error: str | None = None) -> dict:
    """One line of the answers file, in LLaVA's format (+ MMBench's extra fields, as model_vqa_mmbench)."""
    import shortuuid

    record = {"question_id": question.question_id, "prompt": question.text, "text": text,
              "answer_id": shortuuid.uuid(), "model_id": model_id, "metadata": {}}
    if error is not None:
        record["metadata"]["error"] = error
    if benchmark in MMBENCH_NAMES:
        options = question.metadata.get("options") or {}
        record.update(round_id=0, options=list(options.values()), option_char=list(options.keys()))
    return record


def answer_batch(answerer: Answerer, batch: PreparedBatch, model_id: str, benchmark: str) -> list[dict]:
    records = [answer_record(q, "", model_id, benchmark, error) for q, error in batch.failed]
    texts = answerer.generate(batch)
    records += [answer_record(q, text, model_id, benchmark) for q, text in zip(batch.questions, texts)]
    return records


# ---------------------------------------------------------------------------------------------------------
# the loop: chunking, resume, writing
# ---------------------------------------------------------------------------------------------------------

def get_chunk(questions: Sequence[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    """LLaVA's get_chunk: contiguous slices of ceil(n / num_chunks) questions (the last ones may be short or
    empty)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise UserError(f"--chunk-idx {chunk_idx} is outside 0..{num_chunks - 1} (--num-chunks {num_chunks})")
    size = math.ceil(len(questions) / num_chunks)
    return list(questions[chunk_idx * size:(chunk_idx + 1) * size])


@dataclass
class ResumeState:
    pending: list[Question]   # still to answer, in question order
    kept: list[AnswerLine]    # answers already in the file and kept
    dropped_tail: bool
    retried: int              # failed answers (e.g. a missing image) dropped to be tried again


def plan_resume(answers_path: Path, questions: Sequence[Question], use_prompt: bool, model_id: str) -> ResumeState:
    """What is left to answer, given the answers file of an earlier (possibly killed) run. Rewrites the file
    (atomically) without its half-written last line and without failed answers, which are retried."""
    if not answers_path.exists():
        return ResumeState(list(questions), [], False, 0)
    read = read_answer_lines(answers_path)
    other_models = {a.record.get("model_id") for a in read.answers} - {model_id, None}
    if other_models:
        raise UserError(f"{answers_path} holds answers of model {sorted(map(str, other_models))[0]!r}, not "
                        f"{model_id!r}; use another --answers-file (or --model-id) instead of mixing models")
    kept = [a for a in read.answers if not a.failed]
    retried = len(read.answers) - len(kept)
    if read.dropped_tail is not None or retried:
        write_answer_lines(answers_path, [a.line for a in kept])
    answered: dict[tuple, int] = {}
    for answer in kept:
        key = record_key(answer.record, use_prompt)
        answered[key] = answered.get(key, 0) + 1
    pending = []
    for question in questions:
        key = question_key(question, use_prompt)
        if answered.get(key, 0) > 0:
            answered[key] -= 1
        else:
            pending.append(question)
    return ResumeState(pending, kept, read.dropped_tail is not None, retried)


class AnswersWriter:
    """Append-only answers file: each batch is written with one write, then flushed and fsynced."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")

    def append(self, records: Sequence[dict]) -> None:
        if records:
            self.handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


@dataclass
class RunSummary:
    answered: int = 0
    failed: int = 0
    skipped: int = 0   # already in the answers file
    seconds: float = 0.0


def answer_questions(answerer: Answerer, questions: Sequence[Question], answers_path: str | Path, *,
                     model_id: str, benchmark: str, batch_size: int = 16, num_workers: int = 2,
                     use_prompt: bool | None = None, progress: bool = True) -> RunSummary:
    """Answer `questions` (one chunk) into `answers_path`, resuming from what it holds; when all are answered,
    rewrite it in question order."""
    from tqdm import tqdm

    answers_path = Path(answers_path)
    if use_prompt is None:
        use_prompt = not ids_are_unique(questions)
    state = plan_resume(answers_path, questions, use_prompt, model_id)
    if state.dropped_tail:
        print(f"{answers_path}: dropped a half-written last line from an interrupted run", file=sys.stderr)
    if state.retried:
        print(f"{answers_path}: retrying {state.retried} answers that had failed", file=sys.stderr)
    summary = RunSummary(skipped=len(questions) - len(state.pending))
    start = time.perf_counter()
    if state.pending:
        summary = _answer_pending(answerer, state.pending, answers_path, model_id, benchmark, batch_size,
                                  num_workers, progress, summary, tqdm)
    _rewrite_in_question_order(answers_path, questions, use_prompt)
    summary.seconds = time.perf_counter() - start
    return summary


def _answer_pending(answerer, pending, answers_path, model_id, benchmark, batch_size, num_workers, progress,
                    summary, tqdm) -> RunSummary:
    prompt_ids = answerer.prompt_ids(pending)
    # Longest first: similar lengths share a batch (little padding), and a too-large batch fails at once.
    order = sorted(range(len(pending)), key=lambda i: -answerer.prepared_length(prompt_ids[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    writer = AnswersWriter(answers_path)
    bar = tqdm(total=len(pending), unit="q", desc=f"{benchmark} answering", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            upcoming = iter(batches)
            ahead: deque[Future] = deque()

            def prepare_ahead() -> None:  # keep `num_workers` batches being prepared while the model generates
                for batch in upcoming:
                    ahead.append(pool.submit(answerer.prepare, [pending[i] for i in batch],
                                             [prompt_ids[i] for i in batch]))
                    if len(ahead) >= max(1, num_workers):
                        return

            prepare_ahead()
            while ahead:
                prepared = ahead.popleft().result()
                prepare_ahead()
                records = answer_batch(answerer, prepared, model_id, benchmark)
                writer.append(records)
                summary.answered += len(records)
                summary.failed += len(prepared.failed)
                bar.update(len(records))
                if summary.failed:
                    bar.set_postfix(failed=summary.failed)
    finally:
        bar.close()
        writer.close()
    return summary


def _rewrite_in_question_order(answers_path: Path, questions: Sequence[Question], use_prompt: bool) -> None:
    if not answers_path.exists():
        write_answer_lines(answers_path, [])  # an empty chunk still leaves its (empty) file
        return
    result = order_answers(questions, read_answer_lines(answers_path).answers, use_prompt)
    if result.missing_positions:
        return  # not complete (cannot happen after a clean run); leave the append-only file as it is
    # Duplicates (only from hand-made files) go first: the scorers' "last answer wins" still picks the same ones.
    write_answer_lines(answers_path, [a.line for a in result.duplicates] + result.lines())


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------

def model_name_from_path(model_path: str) -> str:
    """LLaVA's get_model_name_from_path: the folder name, or `<run>_checkpoint-N` for trainer checkpoints."""
    parts = str(model_path).rstrip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from xmodelvlm.eval.benchmarks import BENCHMARKS, DEFAULT_DATA_ROOT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", help="checkpoint directory")
    p.add_argument("--vision-tower", default=None, help="CLIP directory (default: the checkpoint's own tower)")
    p.add_argument("--bench", required=True, help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help=f"(default: {DEFAULT_DATA_ROOT})")
    p.add_argument("--question-file", default=None, help="another question file in the benchmark's format")
    p.add_argument("--image-folder", type=Path, default=None, help="another image folder")
    p.add_argument("--answers-file", type=Path, help="output JSONL; an existing one is resumed")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-chunks", type=int, default=1)
    p.add_argument("--chunk-idx", type=int, default=0)
    p.add_argument("--conv-mode", default="v1")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the protocol)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    p.add_argument("--model-id", default=None, help="the answers' model_id (default: the checkpoint's name)")
    p.add_argument("--num-workers", type=int, default=2, help="batches whose images are prepared ahead")
    p.add_argument("--strict", action="store_true", help="stop (exit 2) at the first image that does not load")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check-data", action="store_true",
                   help="only check the question file and images are present (exit 2 with what to download)")
    args = p.parse_args(argv)
    if not args.check_data:
        missing = [flag for flag, value in (("--model-path", args.model_path), ("--answers-file", args.answers_file))
                   if value is None]
        if missing:
            p.error(f"{' and '.join(missing)} required")
    if args.batch_size < 1 or args.num_beams < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        p.error("--batch-size, --num-beams and --max-new-tokens must be at least 1")
    return args


def read_benchmark_questions(benchmark, args) -> list[Question]:
    if args.image_folder is None:
        benchmark.check_data(args.data_root, args.question_file)
        return benchmark.read_questions(args.data_root, args.question_file)
    if not args.image_folder.is_dir():
        raise UserError(f"--image-folder {args.image_folder} is not a folder")
    return benchmark.reader(benchmark.question_path(args.data_root, args.question_file), args.image_folder)


def main(argv: list[str] | None = None) -> RunSummary | None:
    from xmodelvlm.eval.benchmarks import get_benchmark
    from xmodelvlm.model.builder import load_pretrained_model

    args = parse_args(argv)
    benchmark = get_benchmark(args.bench)
    if args.check_data:
        benchmark.check_data(args.data_root, args.question_file)
        return None
    all_questions = read_benchmark_questions(benchmark, args)
    questions = get_chunk(all_questions, args.num_chunks, args.chunk_idx)
    model_id = args.model_id or model_name_from_path(args.model_path)
    use_prompt = not ids_are_unique(all_questions)
    if not plan_resume(args.answers_file, questions, use_prompt, model_id).pending:
        _rewrite_in_question_order(args.answers_file, questions, use_prompt)
        print(f"{args.answers_file}: all {len(questions)} questions of this chunk are answered", file=sys.stderr)
        return RunSummary(skipped=len(questions))

    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.vision_tower,
                                                                 device=args.device, dtype=args.dtype)
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens or benchmark.max_new_tokens,
                                stop_at_newline=benchmark.stop_at_newline, temperature=args.temperature,
                                top_p=args.top_p, num_beams=args.num_beams)
    answerer = Answerer(tokenizer, model, image_processor, settings, args.conv_mode, args.strict)
    summary = answer_questions(answerer, questions, args.answers_file, model_id=model_id, benchmark=benchmark.name,
                               batch_size=args.batch_size, num_workers=args.num_workers, use_prompt=use_prompt,
                               progress=not args.no_progress)
    rate = summary.answered / summary.seconds if summary.seconds else 0.0
    print(f"{benchmark.name} chunk {args.chunk_idx} of {args.num_chunks}: answered {summary.answered} "
          f"({summary.failed} failed: image not loadable), {summary.skipped} already answered, "
          f"{summary.seconds:.1f} s ({rate:.2f} questions/s) -> {args.answers_file}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    run_cli(main)
