"""The demo's language model: a small Llama-architecture LM pre-trained briefly on the synthetic text alone, saved in
Xmodel-LM's layout (the real stage-1 starting point).

    python -m xmodelvlm.demo.tiny_lm --data DATA_DIR --tokenizer TOKENIZER_DIR --out LM_DIR [--steps 80] ...

Xmodel-LM comes to stage 1 already knowing its language; stage 1 then only has to teach the projector to speak it.
Our stand-in learns the synthetic language the same way, by next-token prediction on text: every caption of
`train/pretrain.json` and every conversation of `train/instruct.json`, as plain text (no chat template, no image,
one document per sample, `<s> text </s>`). It never sees an image or the `v1` template; that is stage 1's and
stage 2's job. `--steps 0` leaves it randomly initialised.

The directory gets `config.json` (`model_type "xmodel"`), `model.safetensors` with Llama tensor names, the
tokenizer files, and `lm_warmup_stats.json`; it appears whole or not at all (written beside, then renamed).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

from xmodelvlm.constants import DEFAULT_IMAGE_TOKEN
from xmodelvlm.demo.synthetic_data import SHORT_ANSWER_SUFFIX
from xmodelvlm.errors import ArgumentParser, UserError, run_cli
from xmodelvlm.utils import atomic_write_json

STATS_FILE = "lm_warmup_stats.json"
CORPORA = ("joined", "separate")  # --corpus: see warmup_corpus
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0


def _turns_text(turns: list[dict]) -> str:
    return "\n".join(t["value"].replace(DEFAULT_IMAGE_TOKEN, "").replace(SHORT_ANSWER_SUFFIX, "").strip()
                     for t in turns).strip()


def warmup_corpus(data_dir: str | Path, joined: bool = True) -> list[str]:
    """The warm-up documents, `<image>` removed. `joined` (default): one document per training image, its caption
    followed by its conversation, so the LM learns to answer questions about a description earlier in its context
    (reading comprehension, which a real pre-trained LM brings to stage 1); plus the text-only conversations.
    Otherwise captions and conversations are separate documents. Boilerplate is left out: a caption's
    instruction (one of a few fixed prompts) and the short-answer instruction after questions."""
    data_dir = Path(data_dir)
    samples = {}
    for name in ("pretrain.json", "instruct.json"):
        path = data_dir / "train" / name
        if not path.is_file():
            raise UserError(f"{path} not found: run `python -m xmodelvlm.demo.synthetic_data --out {data_dir}` first")
        samples[name] = json.loads(path.read_text(encoding="utf-8"))
    captions = {s.get("image"): _turns_text([t for t in s["conversations"] if t["from"] == "gpt"])
                for s in samples["pretrain.json"]}
    docs = []
    if not joined:
        docs.extend(captions.values())
    for sample in samples["instruct.json"]:
        text = _turns_text(sample["conversations"])
        caption = captions.get(sample.get("image")) if joined and sample.get("image") else None
        docs.append(f"{caption}\n{text}" if caption else text)
    return [doc for doc in docs if doc]


def build_lm(sizes: dict, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**sizes, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, hidden_act="silu")
    return LlamaForCausalLM(config)


def _batches(encoded: list[list[int]], batch_size: int, steps: int, seed: int, group_steps: int = 1):
    """`steps` batches of (input_ids, attention_mask, labels), reshuffling each epoch (an epoch's leftover short of
    a batch is dropped); right padding, pad = 0. `group_steps` > 1 sorts by length across that many batches'
    documents and shuffles the resulting batches (the trainer's `--length_group_steps`): the same documents per
    epoch, far less padding."""
    import torch

    from xmodelvlm.train.sampler import modality_grouped_indices

    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(encoded))
    lengths = [len(ids) for ids in encoded]  # all positive: one modality, so only the length grouping applies
    epoch: list[list[int]] = []
    for _ in range(steps):
        if not epoch:
            order = modality_grouped_indices(lengths, batch_size, 1, gen, group_steps)
            epoch = [order[k:k + batch_size] for k in range(0, len(order) - batch_size + 1, batch_size)][::-1]
        rows = [encoded[i] for i in epoch.pop()]  # popped from the end, hence the reversed list
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        yield input_ids, mask, input_ids.masked_fill(mask == 0, -100)


def warm_up(model, docs: list[str], sp, steps: int, batch_size: int, lr: float, seed: int,
            log_every: int = 10, device: str = "cpu", group_steps: int = 1) -> dict:
    """Next-token training of `model` on `docs` (AdamW, linear warmup then cosine, grad clip 1); returns stats."""
    import torch

    encoded = [[BOS_ID] + ids + [EOS_ID] for ids in sp.encode(docs)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min((k + 1) / warm, 0.5 * (1 + math.cos(math.pi * k / max(1, steps)))))
    model.to(device).train()
    losses, t0 = [], time.time()
    for step, (input_ids, mask, labels) in enumerate(_batches(encoded, batch_size, steps, seed, group_steps)):
        loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == steps - 1:
            print(f"[tiny_lm] step {step + 1}/{steps} loss {losses[-1]:.3f} {time.time() - t0:.1f}s",
                  file=sys.stderr, flush=True)
    model.to("cpu").eval()
    return {"steps": steps, "documents": len(docs), "first_loss": round(losses[0], 4) if losses else None,
            "final_loss": round(sum(losses[-5:]) / len(losses[-5:]), 4) if losses else None,
            "train_seconds": round(time.time() - t0, 2)}


def make_tiny_lm(data_dir, tokenizer_dir, out_dir, *, hidden: int = 128, intermediate: int = 384, layers: int = 3,
                 heads: int = 4, kv_heads: int = 4, steps: int = 80, batch_size: int = 64, lr: float = 3e-3,
                 seed: int = 0, threads: int = 1, joined: bool = True, device: str = "cpu",
                 length_group_steps: int = 1) -> dict:
    """Build, warm up and save the LM; returns its stats (also in `out_dir/lm_warmup_stats.json`)."""
    import sentencepiece as spm
    import torch

    from xmodelvlm.model.make_tiny import save_xmodel_lm
    from xmodelvlm.model.tokenizer import find_sentencepiece_file

    if length_group_steps < 1:
        raise UserError(f"--length-group-steps must be >= 1, got {length_group_steps}")
    if hidden % heads or heads % kv_heads:
        raise UserError(f"--hidden {hidden} must be divisible by --heads {heads}, and --heads by --kv-heads {kv_heads}")
    t0 = time.time()
    torch.set_num_threads(threads)
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    sp = spm.SentencePieceProcessor(model_file=str(find_sentencepiece_file(tokenizer_dir)))
    sizes = {"vocab_size": sp.get_piece_size(), "hidden_size": hidden, "intermediate_size": intermediate,
             "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads}
    model = build_lm(sizes, seed)
    stats = (warm_up(model, warmup_corpus(data_dir, joined), sp, steps, batch_size, lr, seed, device=device,
                     group_steps=length_group_steps) if steps > 0 else {"steps": 0})
    stats.update(sizes, parameters=sum(p.numel() for p in model.parameters()), batch_size=batch_size, lr=lr,
                 seed=seed, threads=threads, joined=joined, length_group_steps=length_group_steps)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_xmodel_lm(tmp, model.state_dict(), sizes, tokenizer_dir)
    stats["seconds"] = round(time.time() - t0, 2)
    atomic_write_json(tmp / STATS_FILE, stats)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m xmodelvlm.demo.tiny_lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="directory written by xmodelvlm.demo.synthetic_data")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (xmodelvlm.demo.tiny_tokenizer)")
    p.add_argument("--out", required=True, help="LM directory to write (Xmodel-LM layout)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=80, help="warm-up optimizer steps (0 = random init)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--corpus", choices=CORPORA, default="joined",
                   help="joined: each image's caption and conversation as one document (default); separate: apart")
    p.add_argument("--length-group-steps", type=int, default=1,
                   help="sort documents by length across this many batches' worth, then shuffle the batches: "
                        "far less padding (default 1: random batches)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default cpu)")
    a = p.parse_args(argv)
    if not Path(a.tokenizer).is_dir():
        raise UserError(f"--tokenizer {a.tokenizer}: no such directory (run xmodelvlm.demo.tiny_tokenizer first)")
    stats = make_tiny_lm(a.data, a.tokenizer, a.out, hidden=a.hidden, intermediate=a.intermediate, layers=a.layers,
                         heads=a.heads, kv_heads=a.kv_heads, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                         seed=a.seed, threads=a.threads, joined=a.corpus == "joined", device=a.device,
                         length_group_steps=a.length_group_steps)
    print(f"[tiny_lm] wrote {a.out}: {json.dumps(stats)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
