"""Can a demo LM (text only, before any image) answer a question from a scene in its context? (not a test)

    python bench/demo_lm_lookup.py LM_DIR TOKENIZER_DIR [--scenes 200] [--context grid|caption] [--presence-kinds]

Draws new scenes (a stream of their own), asks each one question per family and prints, per family, how often the
LM's likeliest answer among the family's answers (the first token of each) is the true one. `--context grid` (the
default) puts the scene before the question as the `scenes`/`grid` warm-ups do: one vector per 16 px cell, the mean
embedding of the words for what lies there (`xmodelvlm.demo.tiny_lm.scene_cells`); `--context caption` puts its
caption there instead, as the `joined` warm-up does. An LM that looks the scene up scores near 1; one that answers
from priors scores what naming the commonest answer does (about 0.3 for shapes, 0.5 for yes / no).

`--presence-kinds` asks instead, of each scene, "is there a <colour> <shape>?" once per kind of pair: one present,
and absent ones sharing with the objects present their colour only, their shape only, both (from two objects) or
neither, and prints how often each is answered right ("Yes" / "No", the likelier first token). An LM that answers
from the colour alone gets the colour-only and both kinds wrong and the others right.
"""
import argparse

import numpy as np
import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

from demo_common import pair_kind
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.demo import tiny_lm as tl

FAMILIES = ("shape_query", "shape_at", "color_query", "color_at", "exist_pair", "exist_shape")

p = argparse.ArgumentParser()
p.add_argument("lm")
p.add_argument("tokenizer")
p.add_argument("--scenes", type=int, default=200)
p.add_argument("--context", choices=("grid", "caption"), default="grid")
p.add_argument("--image-size", type=int, default=48)
p.add_argument("--side", type=int, default=3)
p.add_argument("--presence-kinds", action="store_true", help="presence of a pair by what the pair shares")
a = p.parse_args()
torch.set_num_threads(1)
sp = spm.SentencePieceProcessor(model_file=f"{a.tokenizer}/tokenizer.model")
model = LlamaForCausalLM.from_pretrained(a.lm).eval()


def first_answer_token(prefix: list[int], text: str, answer: str) -> int:
    """The answer's first token where it stands after `text` (SentencePiece may merge across the boundary)."""
    return (prefix + sp.encode(text + answer))[len(prefix) + len(sp.encode(text))]


def presence_questions(scene, rng) -> list[tuple[str, str, str, tuple[str, str]]]:
    """(kind, question, answer, candidates): "is there a <colour> <shape>?" for one pair of each kind."""
    present = scene.pairs()
    kinds = {"present": sorted(present)}
    for pair in ((c, s) for c in sd.COLORS for s in sd.SHAPES if (c, s) not in present):
        kinds.setdefault(pair_kind(present, *pair), []).append(pair)
    return [(kind, sd.exist_question(*sd._pick(rng, pairs)), "yes" if kind == "present" else "no", ("yes", "no"))
            for kind, pairs in kinds.items()]


rng = np.random.default_rng([2026, 11, 28])
questions = []  # (family, (ids, cell ids or None), the true answer's first token, the candidates' first tokens)
for _ in range(a.scenes):
    scene = sd.sample_scene(rng, a.image_size)
    if a.context == "grid":
        cells = tl.scene_cells(scene.to_json(), a.side, a.image_size)
        prefix, cell_ids, text = [tl.BOS_ID] + [tl.PAD_ID] * len(cells), [
            [i for word in words for i in sp.encode(word)] for words in cells], "\n"
    else:
        prefix, cell_ids, text = [tl.BOS_ID], None, sd.caption(scene, rng) + "\n"
    if a.presence_kinds:
        asked = presence_questions(scene, rng)
    else:
        asked = []
        for family in FAMILIES:
            if sd.FAMILIES[family][1](scene):
                qa = sd.FAMILIES[family][0](scene, rng, popularity=sd.DEFAULT_POPULARITY)
                answers = (sd.SHAPES if family.startswith("shape") else sd.COLORS if family.startswith("color")
                           else ("yes", "no"))
                asked.append((family, qa.question, qa.short, answers))
    for family, question, truth, answers in asked:
        context = f"{text}{question}\n"
        ids = prefix + sp.encode(context)
        candidates = sorted({first_answer_token(prefix, context, sd._cap(x)) for x in answers})
        questions.append((family, (ids, cell_ids), first_answer_token(prefix, context, sd._cap(truth)),
                          candidates))

right: dict[str, list[int]] = {}
with torch.no_grad():
    for k in range(0, len(questions), 64):
        chunk = questions[k:k + 64]
        rows = [q[1] for q in chunk]
        input_ids, mask, _ = tl._collate([ids for ids, _ in rows], [len(c or ()) for _, c in rows])
        logits = model(inputs_embeds=tl._cell_vectors(model.get_input_embeddings(), rows, input_ids),
                       attention_mask=mask).logits
        for row, (family, (ids, _), truth, candidates) in enumerate(chunk):
            scores = logits[row, len(ids) - 1, candidates]
            tally = right.setdefault(family, [0, 0])
            tally[0] += int(candidates[int(scores.argmax())] == truth)
            tally[1] += 1
print(f"{a.lm} ({a.context}, {a.scenes} scenes): " + ", ".join(
    f"{family} {ok / n:.2f} ({n})" for family, (ok, n) in right.items()))
