"""What `--length_group_steps` buys (not a test): padding and training throughput, grouped vs random batches.

    python bench/bench_length_grouping.py DEMO_OUT_DIR [STEPS=120] [BATCH=32] [THREADS=2]

On a finished demo run's data, tokenizer, LM and tower: (1) the share of real (non-padding) tokens in the LM
warm-up's batches (batch 64, 450 steps), for 1 (random batches) and 16 steps per length group; (2) stage-2
training throughput through the real `train.py` entry point (`--version v1 --group_by_modality_length True`, no
checkpoints, no data-loader workers, as in the demo), STEPS steps each, random then length-grouped (16 steps)
batches, one after the other in this process.
"""
import sys
import time
from pathlib import Path

import torch

from xmodelvlm.demo.tiny_lm import BOS_ID, EOS_ID, _batches, warmup_corpus

out = Path(sys.argv[1])
steps, batch, threads = (int(x) for x in (sys.argv[2:] + ["120", "32", "2"][len(sys.argv) - 2:])[:3])
torch.set_num_threads(threads)

import sentencepiece as spm  # noqa: E402

sp = spm.SentencePieceProcessor(model_file=str(out / "models" / "tokenizer" / "tokenizer.model"))
docs = [[BOS_ID] + ids + [EOS_ID] for ids in sp.encode(warmup_corpus(out / "data", True))]
for group in (1, 16):
    real = padded = 0
    for _, mask, _ in _batches(docs, 64, 450, 0, group):
        real, padded = real + int(mask.sum()), padded + mask.numel()
    print(f"LM warm-up, length_group_steps {group:2d}: {real / padded:.1%} of batch tokens are real")

from xmodelvlm.train.train import main as train_main  # noqa: E402

args = ["--model_name_or_path", str(out / "models" / "lm"), "--vision_tower", str(out / "models" / "clip"),
        "--mm_projector_type", "xdpnetv10_1", "--mm_vision_select_layer", "-2", "--image_aspect_ratio", "pad",
        "--use_cpu", "True", "--bf16", "False", "--save_strategy", "no", "--lr_scheduler_type", "cosine",
        "--logging_steps", "1000", "--gradient_checkpointing", "False", "--dataloader_num_workers", "0",
        "--report_to", "none", "--disable_tqdm", "True", "--version", "v1",
        "--data_path", str(out / "data" / "train" / "instruct.json"), "--image_folder", str(out / "data" / "train"),
        "--group_by_modality_length", "True", "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
        "--learning_rate", "1e-3"]
for group in (1, 16):
    t0 = time.time()
    train_main(args + ["--output_dir", f"/tmp/bench_length_grouping_{group}", "--length_group_steps", str(group)])
    print(f"stage 2, batch {batch}, length_group_steps {group:2d}: {steps * batch / (time.time() - t0):.1f} "
          f"samples/s over {steps} steps, {threads} threads (incl. model set-up)", flush=True)
