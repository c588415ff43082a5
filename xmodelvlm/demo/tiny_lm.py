"""The demo's language model: a small Llama-architecture LM pre-trained briefly on the synthetic text alone, saved in
Xmodel-LM's layout (the real stage-1 starting point).

    python -m xmodelvlm.demo.tiny_lm --data DATA_DIR --tokenizer TOKENIZER_DIR --out LM_DIR [--steps 80] ...

Xmodel-LM comes to stage 1 already knowing its language; stage 1 then only has to teach the projector to speak it.
Our stand-in learns the synthetic language the same way, by next-token prediction on text; with `--corpus joined`
(the command's default): every caption of `train/pretrain.json` and every conversation of `train/instruct.json`, as
plain text (no chat template, no image, one document per sample, `<s> text </s>`). It never sees an image or the
`v1` template; that is stage 1's and stage 2's job. `--steps 0` leaves it randomly initialised.

`--corpus grid` adds, for every training scene, the scene laid out as the image tokens will reach the LM: a row-major
grid of `--grid-side`² cell vectors, each the mean of the LM's own embeddings of the words for what lies in that
cell ("small red circle", or the background's "gray striped"), followed by the scene's caption (as stage 1's `plain`
prompt puts image then caption) and, in a second document, by its conversation. In 450 steps it learns to describe
such a grid but not to look a place up for a question (BENCHMARKS.md, "A warm-up that reads scene grids").

`--corpus scenes` (the demo's default) reads only such grids, of `--scenes` new scenes that the data generator draws
for the LM alone (text only, no image rendered), each followed by one conversation about it or, a quarter of the
time, by its caption. The scenes are new, so the LM cannot answer from memory: it has to look the grid up ("what
shape is the red object?" after a held-out grid: 0.96-0.99 with `--init-std 0.08` and 900 steps; after 600 steps
some LMs had not learned it yet, and from Llama's 0.02 none had after 900). That is what stage 2 asks of it with
the image tokens: the VLM built on it names shapes, which none built on the `joined` warm-up (whose LM answers
from priors even with the caption in its context) learned in stage 2's time (BENCHMARKS.md, "An LM that has
learned to look things up").

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
from xmodelvlm.demo.synthetic_data import SHORT_ANSWER_SUFFIX, cell_index, manifest_image_size
from xmodelvlm.errors import ArgumentParser, UserError, run_cli
from xmodelvlm.utils import atomic_write_json

STATS_FILE = "lm_warmup_stats.json"
CORPORA = ("joined", "separate", "grid", "scenes")  # --corpus: see warmup_corpus, grid_documents, scene_documents
GRID_CORPORA = ("grid", "scenes")  # the corpora with scene grids (`--grid-side` cells per side)
LLAMA_INIT_STD = 0.02  # Llama's initializer_range
SCENE_CAPTION_SHARE = 0.25  # `scenes` corpus: a grid followed by the scene's caption, else by a conversation
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0


def _turns_text(turns: list[dict]) -> str:
    return "\n".join(t["value"].replace(DEFAULT_IMAGE_TOKEN, "").replace(SHORT_ANSWER_SUFFIX, "").strip()
                     for t in turns).strip()


def _training_json(data_dir: str | Path, name: str) -> list:
    """`DATA_DIR/train/<name>` of a synthetic dataset, read; a clear error when it is not there."""
    path = Path(data_dir) / "train" / name
    if not path.is_file():
        raise UserError(f"{path} not found: run `python -m xmodelvlm.demo.synthetic_data --out {data_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def warmup_corpus(data_dir: str | Path, joined: bool = True) -> list[str]:
    """The warm-up documents, `<image>` removed. `joined` (default): one document per training image, its caption
    followed by its conversation, so the LM learns to answer questions about a description earlier in its context
    (reading comprehension, which a real pre-trained LM brings to stage 1); plus the text-only conversations.
    Otherwise captions and conversations are separate documents. Boilerplate is left out: a caption's
    instruction (one of a few fixed prompts) and the short-answer instruction after questions."""
    samples = {name: _training_json(data_dir, name) for name in ("pretrain.json", "instruct.json")}
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


def scene_cells(scene: dict, side: int, image_size: int) -> list[list[str]]:
    """What each cell of a `side` x `side` grid over the image holds, row-major (the patch tokens' order): an
    object's size, colour and shape words where its centre lies, else the background's colour and texture."""
    cells = [[scene["bg_color"], scene["bg_texture"]] for _ in range(side * side)]
    for obj in scene["objects"]:
        cells[cell_index(obj, image_size / side, side)] = [obj["size"], obj["color"], obj["shape"]]
    return cells


def _image_size(data_dir: str | Path) -> int:
    """The synthetic dataset's image size (its manifest's), which places the objects in the grid's cells."""
    image_size = manifest_image_size(data_dir)
    if not image_size:
        raise UserError(f"{Path(data_dir) / 'manifest.json'} not found: regenerate the data with "
                        f"`python -m xmodelvlm.demo.synthetic_data --out {data_dir} --force`")
    return image_size


def grid_documents(data_dir: str | Path, side: int) -> list[tuple[list[list[str]], str]]:
    """(cells, text) per training scene: its grid (`scene_cells`) before its caption, and before its conversation
    (after a newline, as `v1` puts the question on the line after the image)."""
    samples = {name: _training_json(data_dir, name) for name in ("scenes.json", "pretrain.json", "instruct.json")}
    image_size = _image_size(data_dir)
    scenes = {s["image"]: s for s in samples["scenes.json"]}
    docs = []
    for name, prefix in (("pretrain.json", ""), ("instruct.json", "\n")):
        for sample in samples[name]:
            if sample.get("image") in scenes:
                turns = sample["conversations"]
                if name == "pretrain.json":
                    turns = [t for t in turns if t["from"] == "gpt"]
                docs.append((scene_cells(scenes[sample["image"]], side, image_size), prefix + _turns_text(turns)))
    return docs


def scene_documents(num_scenes: int, seed: int, side: int, image_size: int) -> list[tuple[list[list[str]], str]]:
    """(cells, text) for `num_scenes` scenes freshly drawn by the data generator (text only: no image is rendered,
    and the stream is the LM's own, apart from the training and evaluation scenes): each scene's grid
    (`scene_cells`) followed by one conversation about it (`instruct_conversation`, as stage 2's), or by its caption
    for a `SCENE_CAPTION_SHARE` of them. Unlike `grid_documents` the scenes are new, so the warm-up cannot answer by
    remembering a scene: it has to read the grid, which is what it must do with the image tokens."""
    from xmodelvlm.demo import synthetic_data as sd

    docs = []
    for i in range(num_scenes):
        rng = sd._rng(seed, sd.STREAM_LM_SCENES, i)
        scene = sd.sample_scene(rng, image_size)
        # the fields scene_cells reads, without to_json's deep copy (a fifth of the time here)
        cells = scene_cells({"bg_color": scene.bg_color, "bg_texture": scene.bg_texture,
                             "objects": [vars(o) for o in scene.objects]}, side, image_size)
        if rng.random() < SCENE_CAPTION_SHARE:
            docs.append((cells, sd.caption(scene, rng)))
        else:
            docs.append((cells, "\n" + _turns_text(sd.instruct_conversation(scene, rng, sd.DEFAULT_POPULARITY))))
    return docs


def encode_documents(texts: list[str], grids: list[tuple[list[list[str]], str]], sp) -> list[tuple]:
    """Token ids per document, `<s> ... </s>`: (ids, None) for text, (ids, cell word ids) for a grid document,
    whose cells sit right after `<s>` as placeholders (PAD ids, not predicted) filled in by `_cell_vectors`."""
    encoded = [([BOS_ID] + ids + [EOS_ID], None) for ids in sp.encode(texts)]
    words = {word for cells, _ in grids for cell in cells for word in cell}  # the few cell words, encoded once
    word_ids = dict(zip(words, sp.encode(list(words))))
    for (cells, _), text_ids in zip(grids, sp.encode([text for _, text in grids])):
        cell_ids = [[i for word in cell for i in word_ids[word]] for cell in cells]
        encoded.append(([BOS_ID] + [PAD_ID] * len(cells) + text_ids + [EOS_ID], cell_ids))
    return encoded


def _cell_vectors(embed, rows: list, input_ids):
    """Input embeddings of a batch with every grid document's placeholders replaced by its cell vectors (the mean
    embedding of each cell's words); `rows` are the batch's (ids, cell ids) documents."""
    import torch

    inputs = embed(input_ids)
    where = [(b, k, ids) for b, (_, cells) in enumerate(rows) if cells for k, ids in enumerate(cells)]
    if not where:
        return inputs
    width = max(len(ids) for _, _, ids in where)
    word_ids = torch.tensor([ids + [PAD_ID] * (width - len(ids)) for _, _, ids in where], device=input_ids.device)
    present = torch.tensor([[1.0] * len(ids) + [0.0] * (width - len(ids)) for _, _, ids in where],
                           device=input_ids.device)
    vectors = (embed(word_ids) * present[..., None]).sum(1) / present.sum(1, keepdim=True)
    index = (torch.tensor([b for b, _, _ in where], device=input_ids.device),
             torch.tensor([1 + k for _, k, _ in where], device=input_ids.device))
    return inputs.index_put(index, vectors.to(inputs.dtype))


def build_lm(sizes: dict, seed: int, init_std: float = LLAMA_INIT_STD):
    """A randomly initialised Llama, its weights drawn with standard deviation `init_std` (Llama's own: 0.02)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**sizes, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, hidden_act="silu",
                         initializer_range=init_std)
    return LlamaForCausalLM(config)


def _batch_indices(lengths: list[int], batch_size: int, steps: int, seed: int, group_steps: int = 1):
    """`steps` batches of document indices, reshuffling each epoch (an epoch's leftover short of a batch is
    dropped). `group_steps` > 1 sorts by length across that many batches' documents and shuffles the resulting
    batches (the trainer's `--length_group_steps`): the same documents per epoch, far less padding."""
    import torch

    from xmodelvlm.train.sampler import modality_grouped_indices

    gen = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(lengths))
    epoch: list[list[int]] = []
    for _ in range(steps):
        if not epoch:  # all lengths positive: one modality, so only the length grouping applies
            order = modality_grouped_indices(lengths, batch_size, 1, gen, group_steps)
            epoch = [order[k:k + batch_size] for k in range(0, len(order) - batch_size + 1, batch_size)][::-1]
        yield epoch.pop()  # popped from the end, hence the reversed list


def _collate(rows: list[list[int]], num_cells: list[int] | None = None):
    """(input_ids, attention_mask, labels), right padding with pad = 0; the first `num_cells[row]` positions after
    `<s>` (a grid's placeholders) are not predicted."""
    import torch

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    for row, n in enumerate(num_cells or []):
        labels[row, 1:1 + n] = -100
    return input_ids, mask, labels


def warm_up(model, docs: list[str], sp, steps: int, batch_size: int, lr: float, seed: int,
            log_every: int = 10, device: str = "cpu", group_steps: int = 1,
            grids: list[tuple[list[list[str]], str]] = ()) -> dict:
    """Next-token training of `model` on `docs` and the `grids` documents (`grid_documents`) (AdamW, linear warmup
    then cosine, grad clip 1); returns stats."""
    import torch

    encoded = encode_documents(docs, list(grids), sp)
    embed = model.get_input_embeddings()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min((k + 1) / warm, 0.5 * (1 + math.cos(math.pi * k / max(1, steps)))))
    model.to(device).train()
    losses, t0 = [], time.time()
    lengths = [len(ids) for ids, _ in encoded]
    for step, idx in enumerate(_batch_indices(lengths, batch_size, steps, seed, group_steps)):
        rows = [encoded[i] for i in idx]
        input_ids, mask, labels = _collate([ids for ids, _ in rows], [len(cells or ()) for _, cells in rows])
        inputs = _cell_vectors(embed, rows, input_ids.to(device))
        loss = model(inputs_embeds=inputs, attention_mask=mask.to(device), labels=labels.to(device)).loss
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
    return {"steps": steps, "documents": len(docs), "grid_documents": len(grids),
            "first_loss": round(losses[0], 4) if losses else None,
            "final_loss": round(sum(losses[-5:]) / len(losses[-5:]), 4) if losses else None,
            "train_seconds": round(time.time() - t0, 2)}


def make_tiny_lm(data_dir, tokenizer_dir, out_dir, *, hidden: int = 128, intermediate: int = 384, layers: int = 3,
                 heads: int = 4, kv_heads: int = 4, steps: int = 80, batch_size: int = 64, lr: float = 3e-3,
                 seed: int = 0, threads: int = 1, corpus: str = "joined", device: str = "cpu",
                 length_group_steps: int = 1, grid_side: int = 3, scenes: int = 20000,
                 init_std: float = LLAMA_INIT_STD) -> dict:
    """Build (weights drawn with standard deviation `init_std`), warm up and save the LM on `corpus` (one of
    CORPORA; "grid" and "scenes" with `grid_side`² cells per grid, see `grid_documents`; "scenes" draws `scenes`
    new scenes, see `scene_documents`); returns its stats (also in `out_dir/lm_warmup_stats.json`)."""
    import sentencepiece as spm
    import torch

    from xmodelvlm.model.make_tiny import save_xmodel_lm
    from xmodelvlm.model.tokenizer import find_sentencepiece_file

    if length_group_steps < 1:
        raise UserError(f"--length-group-steps must be >= 1, got {length_group_steps}")
    if corpus not in CORPORA:
        raise UserError(f"corpus must be one of {', '.join(CORPORA)}, got {corpus!r}")
    if corpus in GRID_CORPORA and grid_side < 1:
        raise UserError(f"grid_side must be at least 1 with the {corpus} corpus, got {grid_side}")
    if corpus == "scenes" and scenes < 1:
        raise UserError(f"--scenes must be at least 1 with the scenes corpus, got {scenes}")
    if not init_std > 0:
        raise UserError(f"--init-std must be positive, got {init_std}")
    if hidden % heads or heads % kv_heads:
        raise UserError(f"--hidden {hidden} must be divisible by --heads {heads}, and --heads by --kv-heads {kv_heads}")
    t0 = time.time()
    torch.set_num_threads(threads)
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    sp = spm.SentencePieceProcessor(model_file=str(find_sentencepiece_file(tokenizer_dir)))
    sizes = {"vocab_size": sp.get_piece_size(), "hidden_size": hidden, "intermediate_size": intermediate,
             "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads}
    model = build_lm(sizes, seed, init_std)
    if corpus == "scenes":
        image_size = _image_size(data_dir)  # checked also for --steps 0, which draws no scenes
        docs, grids = [], scene_documents(scenes, seed, grid_side, image_size) if steps > 0 else []
    else:
        grids = grid_documents(data_dir, grid_side) if corpus == "grid" else []
        docs = warmup_corpus(data_dir, joined=corpus != "separate")
    stats = (warm_up(model, docs, sp, steps, batch_size, lr, seed, device=device, group_steps=length_group_steps,
                     grids=grids) if steps > 0 else {"steps": 0})
    stats.update(sizes, parameters=sum(p.numel() for p in model.parameters()), batch_size=batch_size, lr=lr,
                 seed=seed, threads=threads, corpus=corpus, length_group_steps=length_group_steps,
                 grid_side=grid_side if corpus in GRID_CORPORA else 0, init_std=init_std,
                 **({"scenes": scenes} if corpus == "scenes" else {}))
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
                   help="joined: each image's caption and conversation as one document (default); separate: apart; "
                        "grid: joined, plus each scene as a grid of cell vectors before its caption / conversation; "
                        "scenes: only grids, of --scenes new scenes, each before a conversation or its caption")
    p.add_argument("--grid-side", type=int, default=3,
                   help="with --corpus grid or scenes: cells per side of the grid, i.e. image tokens per side "
                        "(default 3)")
    p.add_argument("--scenes", type=int, default=20000,
                   help="with --corpus scenes: how many new scenes to draw (default 20000)")
    p.add_argument("--init-std", type=float, default=LLAMA_INIT_STD,
                   help="standard deviation of the initial weights (default 0.02, Llama's)")
    p.add_argument("--length-group-steps", type=int, default=1,
                   help="sort documents by length across this many batches' worth, then shuffle the batches: "
                        "far less padding (default 1: random batches)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default cpu)")
    a = p.parse_args(argv)
    if a.corpus in GRID_CORPORA and a.grid_side < 1:
        p.error(f"--grid-side must be at least 1 with --corpus {a.corpus}, got {a.grid_side}")
    if a.corpus == "scenes" and a.scenes < 1:
        p.error(f"--scenes must be at least 1 with --corpus scenes, got {a.scenes}")
    if not a.init_std > 0:
        p.error(f"--init-std must be positive, got {a.init_std}")
    if not Path(a.tokenizer).is_dir():
        raise UserError(f"--tokenizer {a.tokenizer}: no such directory (run xmodelvlm.demo.tiny_tokenizer first)")
    stats = make_tiny_lm(a.data, a.tokenizer, a.out, hidden=a.hidden, intermediate=a.intermediate, layers=a.layers,
                         heads=a.heads, kv_heads=a.kv_heads, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                         seed=a.seed, threads=a.threads, corpus=a.corpus, device=a.device,
                         length_group_steps=a.length_group_steps, grid_side=a.grid_side, scenes=a.scenes,
                         init_std=a.init_std)
    print(f"[tiny_lm] wrote {a.out}: {json.dumps(stats)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
