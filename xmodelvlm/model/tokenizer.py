"""The Xmodel SentencePiece tokenizer, reproducing the released (slow) tokenizer's ids exactly.

The released checkpoint ships `xmodel_32000.model` with a `tokenizer_config.json` that names remote code
(`XModelTokenizer`). transformers 5 has no slow LlamaTokenizer, and its fast Llama tokenizer gives different ids
for unigram models, so we subclass `SentencePieceBackend` and pin the released behaviour (SPEC §3):

* split the text at the special-token strings (`<s>`, `</s>`, `<unk>` and any added token) — they become their ids,
  neighbouring spaces are kept;
* encode every other non-empty piece with `sp.encode(piece)` (each piece gets sentencepiece's dummy prefix);
* put BOS in front (no EOS).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from ..errors import UserError

TOKENIZER_FILE = "tokenizer.model"


class XmodelTokenizer(SentencePieceBackend):
    vocab_files_names = {"vocab_file": TOKENIZER_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        **kwargs,
    ):
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("legacy", None)
        kwargs.pop("special_tokens_pattern", None)
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            legacy=True,  # legacy = every piece keeps sentencepiece's dummy prefix, as the released tokenizer does
            special_tokens_pattern=self._pattern(add_bos_token, add_eos_token),
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            **kwargs,
        )

    @staticmethod
    def _pattern(add_bos: bool, add_eos: bool) -> str:
        return {(True, False): "bos", (True, True): "bos_eos", (False, True): "eos"}.get((add_bos, add_eos), "none")

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        """Decode with sentencepiece itself, so byte-fallback pieces (`<0x0A>`) become the bytes they stand for."""
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        special_ids = set(self.all_special_ids)
        pieces: list[str] = []
        run: list[int] = []
        for token_id in token_ids:
            if token_id in special_ids or token_id >= self.sp_model.get_piece_size() or token_id < 0:
                if run:
                    pieces.append(self.sp_model.decode(run))
                    run = []
                if not skip_special_tokens and 0 <= token_id:
                    pieces.append(self.convert_ids_to_tokens(token_id))
            else:
                run.append(token_id)
        if run:
            pieces.append(self.sp_model.decode(run))
        return "".join(pieces)


# The released tokenizer_config.json names this class; accept both spellings.
XModelTokenizer = XmodelTokenizer


def find_sentencepiece_file(directory: str | os.PathLike) -> Path:
    """The SentencePiece model in a checkpoint directory: `tokenizer.model`, or the one `*.model` file it holds
    (the released checkpoint calls it `xmodel_32000.model`)."""
    directory = Path(directory)
    preferred = directory / TOKENIZER_FILE
    if preferred.is_file():
        return preferred
    candidates = sorted(p for p in directory.glob("*.model") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(
            f"no SentencePiece tokenizer (*.model) in {directory}: copy the checkpoint's tokenizer files "
            "(e.g. xmodel_32000.model, tokenizer_config.json) into it"
        )
    raise UserError(f"several *.model files in {directory} ({', '.join(p.name for p in candidates)}); "
                    f"keep one or name it {TOKENIZER_FILE}")


_TOKENIZER_CONFIG_KEYS = ("add_bos_token", "add_eos_token", "model_max_length", "padding_side")


def _token_content(value):
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(directory: str | os.PathLike, **overrides) -> XmodelTokenizer:
    """Load the tokenizer from a checkpoint directory as shipped, without running its remote code."""
    directory = Path(directory)
    vocab_file = find_sentencepiece_file(directory)
    kwargs: dict = {}
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{config_path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        kwargs.update({k: config[k] for k in _TOKENIZER_CONFIG_KEYS if k in config})
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            if config.get(name) is not None:
                kwargs[name] = _token_content(config[name])
    kwargs.update(overrides)
    tokenizer = XmodelTokenizer(vocab_file=str(vocab_file), **kwargs)
    tokenizer.name_or_path = str(directory)
    return tokenizer


def save_tokenizer(tokenizer: XmodelTokenizer, directory: str | os.PathLike) -> None:
    """save_pretrained, with a tokenizer_config.json that names our class and no remote code."""
    tokenizer.save_pretrained(directory)
    config_path = Path(directory) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "XmodelTokenizer"
    config.pop("auto_map", None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
