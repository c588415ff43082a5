#!/usr/bin/env python
"""Questions/s of the answering engine (`xmodelvlm.eval.answer`) at batch size 1 vs batched, same run, same data.

    python bench/bench_eval_batching.py                       # CPU: small random model, ~100 questions
    python bench/bench_eval_batching.py --device cuda          # GPU: CLIP-L/336 + 1.1B Llama, bf16, 2,017
                                                               #      SQA-IMG-sized questions (random weights)

Both modes run the real engine end to end (prompt building, length-sorted batches, image loading and CLIP
preprocessing in background threads, `model.generate`, decoding, the fsynced answers file) on synthetic
ScienceQA-style questions: a context of varying length, the question, options, the letter suffix; most with
an image of random size (PNG on disk, decoded per question). Batch size 1 is exactly one `generate()` per
question, as LLaVA's model_vqa_science does. With random weights no answer ends early, so every answer is
`--max-new-tokens` long (SQA answers are a letter and `</s>`: 2–3 tokens). The answers of every batch size are
compared with batch size 1's. Not a test: prints a table and the speed-up, optionally writes JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xmodelvlm.eval.answer import Answerer, DecodingSettings, answer_questions  # noqa: E402
from xmodelvlm.eval.questions import OPTION_LETTER_SUFFIX, ImageRef, Question  # noqa: E402
from xmodelvlm.model.configuration import CLIP_VIT_L_336, XmodelVLMConfig  # noqa: E402
from xmodelvlm.model.modeling import XmodelVLMForCausalLM  # noqa: E402
from xmodelvlm.model.tokenizer import load_tokenizer  # noqa: E402
from xmodelvlm.model.vision_tower import standard_clip_processor  # noqa: E402

FIXTURE_TOKENIZER = REPO.parent / "shared" / "fixtures" / "xmodel_tokenizer"

# CPU: an LM big enough to dominate (hidden 256, 4 layers, 32k vocab), a small tower (56 px → 16 image tokens).
CPU_SHAPES = dict(
    lm=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2),
    tower=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, patch_size=7,
               image_size=56, hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3),
)
# GPU: the released shapes (SPEC §1): CLIP ViT-L/14-336 and Xmodel-LM 1.1B.
GPU_SHAPES = dict(
    lm=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=32,
            num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096),
    tower=dict(CLIP_VIT_L_336),
)
WORDS = ("the plant cells need light water and air to grow while animals eat food from other living things "
         "which map shows a colony select the best estimate of the temperature on a hot day").split()


def build_model(shapes: dict, vocab_size: int, device: str, dtype: torch.dtype) -> XmodelVLMForCausalLM:
    config = XmodelVLMConfig(vocab_size=vocab_size, vision_config=dict(shapes["tower"]),
                             mm_projector_type="xdpnetv10_4", image_aspect_ratio="pad", pad_token_id=0,
                             bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **shapes["lm"])
    torch.manual_seed(0)
    with torch.device(device):
        model = XmodelVLMForCausalLM(config)
    model = model.to(dtype=dtype).eval()
    with torch.no_grad():  # spread the random logits so greedy answers differ between questions
        model.lm_head.weight.normal_(0.0, 0.2 if device == "cpu" else 0.05)
    model.generation_config.pad_token_id = 0
    return model


def synthetic_questions(folder: Path, count: int, image_fraction: float, image_pool: int,
                        seed: int = 0) -> list[Question]:
    """ScienceQA-style questions: 0–120 context words, 2–5 options; images from a pool of random sizes."""
    rng = random.Random(seed)
    images = []
    for k in range(image_pool):
        size = (rng.randint(120, 700), rng.randint(90, 500))
        path = folder / f"img_{k}.png"
        Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(path)
        images.append(path.name)
    questions = []
    for i in range(count):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.choice((0, 0, 10, 30, 60, 120))))
        options = " ".join(f"({chr(65 + j)}) {rng.choice(WORDS)} {rng.choice(WORDS)}"
                           for j in range(rng.randint(2, 5)))
        text = f"Context: {context}\nQuestion: Which {rng.choice(WORDS)} is {rng.choice(WORDS)}?\n" \
               f"Options: {options}{OPTION_LETTER_SUFFIX}"
        image = ImageRef.from_file(i, folder, images[i % image_pool]) if rng.random() < image_fraction else None
        questions.append(Question(question_id=i, text=text, image=image, metadata={}))
    return questions


def measure(answerer: Answerer, questions: list[Question], batch_size: int, workdir: Path,
            num_workers: int) -> tuple[float, list[str]]:
    path = workdir / f"answers_bs{batch_size}.jsonl"
    path.unlink(missing_ok=True)
    if answerer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    answer_questions(answerer, questions, path, model_id="bench", benchmark="sqa", batch_size=batch_size,
                     num_workers=num_workers, progress=False)
    seconds = time.perf_counter() - start
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    return seconds, texts


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shapes", default=None, choices=["small", "released"],
                   help="model shapes (default: small on CPU, released = CLIP-L/336 + 1.1B on GPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="batched sizes to compare with 1 (default: 8 16 on CPU, 16 32 64 on GPU)")
    p.add_argument("--num-questions", type=int, default=None, help="default: 96 on CPU, 2017 (SQA-IMG) on GPU")
    p.add_argument("--baseline-questions", type=int, default=None,
                   help="batch size 1 runs on every k-th question up to this many (default: all on CPU, 256 on "
                        "GPU); the batched runs are also timed on that subset for the like-for-like ratio")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 8 on CPU, 3 on GPU (a letter + </s>)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--num-workers", type=int, default=4, help="batches prepared ahead (image loading threads)")
    p.add_argument("--json-out", type=Path, default=None)
    return p.parse_args()


def main() -> dict:
    args = parse_args()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("error: --device cuda asked for, but no CUDA GPU is visible")
    batch_sizes = args.batch_sizes or ([16, 32, 64] if gpu else [8, 16])
    num_questions = args.num_questions or (2017 if gpu else 96)
    max_new_tokens = args.max_new_tokens or (3 if gpu else 8)
    dtype = getattr(torch, args.dtype or ("bfloat16" if gpu else "float32"))
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True

    tokenizer = load_tokenizer(FIXTURE_TOKENIZER)
    shapes = GPU_SHAPES if (args.shapes or ("released" if gpu else "small")) == "released" else CPU_SHAPES
    model = build_model(shapes, len(tokenizer), args.device, dtype)
    processor = standard_clip_processor(shapes["tower"]["image_size"])
    settings = DecodingSettings(max_new_tokens=max_new_tokens, stop_at_newline=True)
    answerer = Answerer(tokenizer, model, processor, settings)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        questions = synthetic_questions(workdir, num_questions, image_fraction=1.0 if gpu else 0.75,
                                        image_pool=64)
        baseline_count = args.baseline_questions or (256 if gpu else num_questions)
        step = max(1, len(questions) // baseline_count)
        subset = questions[::step][:baseline_count]
        measure(answerer, questions[:max(batch_sizes)], max(batch_sizes), workdir, args.num_workers)  # warm-up

        rows = []
        base_seconds, base_texts = measure(answerer, subset, 1, workdir, args.num_workers)
        rows.append(dict(batch_size=1, questions=len(subset), seconds=base_seconds,
                         questions_per_s=len(subset) / base_seconds, same_answers_as_bs1=True))
        for batch_size in batch_sizes:
            seconds, texts = measure(answerer, subset, batch_size, workdir, args.num_workers)
            row = dict(batch_size=batch_size, questions=len(subset), seconds=seconds,
                       questions_per_s=len(subset) / seconds, same_answers_as_bs1=texts == base_texts)
            if len(subset) < len(questions):  # the full set too, for the whole-benchmark wall time
                full_seconds, _ = measure(answerer, questions, batch_size, workdir, args.num_workers)
                row.update(full_questions=len(questions), full_seconds=full_seconds,
                           full_questions_per_s=len(questions) / full_seconds)
            rows.append(row)

    device_name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; dtype {str(dtype).removeprefix('torch.')}; LM {shapes['lm']['hidden_size']}x"
          f"{shapes['lm']['num_hidden_layers']}, {model.num_image_tokens} image tokens, "
          f"{max_new_tokens} new tokens per answer; {len(subset)} questions "
          f"({sum(q.image is not None for q in subset)} with an image)")
    print("| batch | questions | seconds | questions/s | speed-up | answers == bs 1 |")
    print("|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['batch_size']} | {row['questions']} | {row['seconds']:.1f} | {row['questions_per_s']:.2f} | "
              f"{row['questions_per_s'] / rows[0]['questions_per_s']:.2f}x | {row['same_answers_as_bs1']} |")
        if "full_seconds" in row:
            print(f"|   (all {row['full_questions']}) | | {row['full_seconds']:.1f} | "
                  f"{row['full_questions_per_s']:.2f} | | |")
    best = max(rows[1:], key=lambda r: r["questions_per_s"])
    print(f"speed-up over batch size 1: {best['questions_per_s'] / rows[0]['questions_per_s']:.2f}x "
          f"at batch size {best['batch_size']}")
    result = dict(device=device_name, dtype=str(dtype), max_new_tokens=max_new_tokens, rows=rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
