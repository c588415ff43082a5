"""A small SentencePiece unigram tokenizer trained with the released Xmodel tokenizer's settings.

Same normalisation and special ids as ``xmodel_32000.model`` (SPEC §3): unigram, byte fallback (``"\\n"`` →
``<0x0A>``), dummy prefix, extra whitespace removed, identity normalizer, 0 ``<unk>`` / 1 ``<s>`` / 2 ``</s>``, no
pad piece, digits split and ``.``/``!``/``?`` kept as their own pieces (user-defined symbols, as in the released
model). Only the vocabulary is small, and with ``prompt_pieces`` (the demo's default) two more user-defined
symbols make the v1 system prompt and the short-answer instruction one piece each: they are in every stage-2 sample
and would be 39 of its ~96 tokens. The directory gets ``tokenizer.model`` plus ``tokenizer_config.json`` and
``special_tokens_map.json`` shaped like the released files (without the remote-code ``auto_map``).

CLI: ``python -m xmodelvlm.demo.tiny_tokenizer --data DIR --out DIR [--vocab-size N] [--prompt-pieces]`` where DIR
is the output of :mod:`xmodelvlm.demo.synthetic_data`.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from xmodelvlm.constants import DEFAULT_IMAGE_TOKEN
from xmodelvlm.data.conversation import SYSTEM_V1
from xmodelvlm.demo.synthetic_data import MME_SUFFIX, SHORT_ANSWER_SUFFIX
from xmodelvlm.utils import atomic_write_bytes, atomic_write_json

MODEL_FILE = "tokenizer.model"
DEFAULT_VOCAB_SIZE = 512

# Strings every prompt of the demo (training templates and eval suffixes) is built from.
FIXED_TEXTS = (
    SYSTEM_V1,
    "USER:", "ASSISTANT:", "USER: ASSISTANT:",
    SHORT_ANSWER_SUFFIX.strip(),
    MME_SUFFIX.strip(),
    "Answer with the option's letter from the given choices directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "Reference OCR token:",
)
# user-defined symbols of the released model that matter for ASCII text
USER_SYMBOLS = [str(d) for d in range(10)] + [".", "!", "?"]
# Prompt boilerplate in every stage-2 sample: the v1 system prompt (after the dummy prefix) and the short-answer
# instruction (after a newline, so without a leading space). With `prompt_pieces` each is one user-defined piece,
# which cuts a stage-2 sample from about 96 tokens to 55 (BENCHMARKS.md); the text and the prompts are unchanged.
PROMPT_PIECES = (" " + SYSTEM_V1, SHORT_ANSWER_SUFFIX.strip())


def _piece(text: str) -> str:
    return text.replace(" ", "\u2581")


SPECIAL_TOKENS_MAP = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False}


TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": _added("<s>"),
    "eos_token": _added("</s>"),
    "unk_token": _added("<unk>"),
    "pad_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 2048,
    "padding_side": "right",
    "sp_model_kwargs": {},
    "tokenizer_class": "XmodelTokenizer",
}


def dataset_texts(data_dir: str | Path) -> Iterator[str]:
    """All conversation texts of a synthetic dataset's training files (``<image>`` removed: it never reaches
    SentencePiece, ``tokenizer_image_token`` splits it out)."""
    data_dir = Path(data_dir)
    for name in ("pretrain.json", "instruct.json"):
        path = data_dir / "train" / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `python -m xmodelvlm.demo.synthetic_data --out {data_dir}`")
        for sample in json.loads(path.read_text()):
            for turn in sample["conversations"]:
                yield turn["value"].replace(DEFAULT_IMAGE_TOKEN, "")


# SentencePiece's own pre-tokenisation for ASCII text: a word (with the space before it), one digit, or one
# other non-space character.
_PRETOKEN = re.compile(r" ?(?:[A-Za-z]+|[0-9]|[^A-Za-z0-9\s])")


def _word_counts(texts: Iterable[str], skip: tuple[str, ...] = ()) -> Counter:
    """Pre-token counts of `texts` plus the fixed prompt strings; the strings in `skip` are pieces of their own, so
    neither their occurrences nor their words are counted."""
    counts: Counter = Counter()
    n = 0
    for text in texts:
        for whole in skip:
            text = text.replace(whole, " ")
        if not text or not text.strip():
            continue
        n += 1
        # a leading space = the dummy prefix; runs of spaces collapse like remove_extra_whitespaces
        counts.update(_PRETOKEN.findall(" " + re.sub(" +", " ", text.strip(" "))))
    # the prompt strings occur in every stage-2 sample: weight them like that, whatever the data
    for text in FIXED_TEXTS:
        if text in skip:
            continue
        for w in _PRETOKEN.findall(" " + text):
            counts[w] += max(20, n // 5)
    return counts


def train_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = DEFAULT_VOCAB_SIZE,
                    prompt_pieces: bool = False) -> Path:
    """Train the unigram model on ``texts`` (plus the fixed prompt strings) and write the tokenizer directory.
    ``prompt_pieces``: the system prompt and the short-answer instruction become one piece each (`PROMPT_PIECES`).

    Returns ``out_dir``. Deterministic: identical input gives a byte-identical ``tokenizer.model``.

    How: SentencePiece's seed-piece extraction (suffix array, pieces must be maximal repeats) never proposes a word
    that is always followed by the same character ("USER" before ":", "phrase" before ".") and so, on a corpus this
    small and repetitive, leaves the prompt words in letters. We therefore train on word counts (``input_format
    tsv``) with every substring of every word given as a seed piece, then EM prunes to ``vocab_size`` as usual.
    Training runs with the dummy prefix and whitespace cleanup off, because the words already carry their own
    leading space (words right after a newline have none, e.g. "Answer" in the short-answer suffix); the written
    model has both switched on, which only affects normalisation, so it behaves as the released tokenizer does.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    whole_pieces = PROMPT_PIECES if prompt_pieces else ()
    counts = _word_counts(texts, tuple(whole.strip() for whole in whole_pieces))
    seeds: Counter = Counter()
    for word, c in counts.items():
        w = _piece(word)
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + 16) + 1):
                seeds[w[i:j]] += c
    model = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="tiny_tokenizer_") as tmp:
        seed_file = Path(tmp) / "seeds.tsv"
        # seed score = frequency x length, as SentencePiece scores its own seeds
        seed_file.write_text("".join(f"{p}\t{c * len(p)}\n" for p, c in sorted(seeds.items())), encoding="utf-8")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([f"{w}\t{c}" for w, c in sorted(counts.items())]),
            input_format="tsv",
            seed_sentencepieces_file=str(seed_file),
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            byte_fallback=True,
            add_dummy_prefix=False,          # switched on below (see docstring)
            remove_extra_whitespaces=False,  # switched on below
            normalization_rule_name="identity",
            character_coverage=1.0,
            split_digits=True,
            split_by_unicode_script=True,
            split_by_whitespace=True,
            split_by_number=True,
            max_sentencepiece_length=16,
            user_defined_symbols=USER_SYMBOLS + [_piece(w) for w in whole_pieces],
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            shuffle_input_sentence=False,
            input_sentence_size=0,
            num_threads=1,
            minloglevel=2,
        )
    proto = model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.trainer_spec.seed_sentencepieces_file = ""  # a temp path: would make the file nondeterministic
    proto.trainer_spec.input_format = ""
    atomic_write_bytes(out_dir / MODEL_FILE, proto.SerializeToString())
    atomic_write_json(out_dir / "tokenizer_config.json", TOKENIZER_CONFIG)
    atomic_write_json(out_dir / "special_tokens_map.json", SPECIAL_TOKENS_MAP, indent=None)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the demo's SentencePiece unigram tokenizer on synthetic data.")
    p.add_argument("--data", required=True, help="directory written by xmodelvlm.demo.synthetic_data")
    p.add_argument("--out", required=True, help="tokenizer directory to write")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    p.add_argument("--prompt-pieces", action=argparse.BooleanOptionalAction, default=False,
                   help="the system prompt and the short-answer instruction as one piece each")
    ns = p.parse_args(argv)
    out = train_tokenizer(dataset_texts(ns.data), ns.out, vocab_size=ns.vocab_size, prompt_pieces=ns.prompt_pieces)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / MODEL_FILE))
    print(f"[tiny_tokenizer] wrote {out / MODEL_FILE} ({sp.get_piece_size()} pieces)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
