"""The embedded demo: synthetic data in the real LLaVA formats plus the small frozen pieces (tokenizer, CLIP tower).

Real weights and datasets are far too large for a smoke run on CPU, so the demo builds everything it needs:

- :mod:`xmodelvlm.demo.synthetic_data` — coloured-shape scenes written as LLaVA-558K / LLaVA-665K training files and as
  POPE / GQA / MME evaluation sets in LLaVA-1.5's ``playground/data/eval`` layout;
- :mod:`xmodelvlm.demo.tiny_tokenizer` — a SentencePiece unigram model trained with the Xmodel tokenizer's settings;
- :mod:`xmodelvlm.demo.tiny_clip` — a small CLIP briefly pre-trained on the synthetic captions, saved like
  ``openai/clip-vit-large-patch14-336``.

Submodules are imported lazily (``from xmodelvlm.demo import synthetic_data``) so importing the package stays cheap.
"""
