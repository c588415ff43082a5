"""Reading comprehension of the demo's warmed-up LM, in text alone (not a test).

    python bench/demo_lm_reading.py LM_DIR TOKENIZER_DIR [N=300]

N fresh scenes (their own seed stream, never in the training set): each scene's caption, then one question drawn
from the GQA-style mix, as the warm-up corpus writes them ("<caption>\\n<question>\\n"); the LM continues greedily
and is right when its answer line starts with the yes/no truth or contains the short answer word. Prints overall
and per-family accuracy: how well the LM answers a question about a description in its context, the skill that
stage 2 would transfer to image tokens.
"""
import collections, sys
import numpy as np
import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.model.tokenizer import find_sentencepiece_file

lm_dir, tok_dir = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
torch.set_num_threads(1)
sp = spm.SentencePieceProcessor(model_file=str(find_sentencepiece_file(tok_dir)))
model = LlamaForCausalLM.from_pretrained(lm_dir).eval()
right = collections.defaultdict(list)
for i in range(n):
    rng = sd._rng(7, 99, i)
    scene = sd.sample_scene(rng, 48)
    caption = sd.caption(scene, rng)
    family, qa = sd.sample_qa(scene, rng, sd.GQA_FAMILY_WEIGHTS, sd.DEFAULT_POPULARITY)
    ids = [1] + sp.encode(f"{caption}\n{qa.question}\n")
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=2, pad_token_id=0)
    answer = sp.decode(out[0, len(ids):].tolist()).split("\n")[0].lower()
    words = answer.replace(",", " ").replace(".", " ").split()
    right[family].append(words[:1] == [qa.short] if qa.short in ("yes", "no") else qa.short in words)
print(f"overall {np.mean([v for r in right.values() for v in r]):.3f} ({n} questions)")
for family, r in sorted(right.items()):
    print(f"  {family:16s} {np.mean(r):.2f} ({len(r)})")
