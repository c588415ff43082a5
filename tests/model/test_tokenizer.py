"""The tokenizer gives exactly the released (slow) tokenizer's ids: split at special-token strings, sp.encode each
remaining piece (each with the dummy prefix), BOS in front (SPEC §3)."""
import json
import re
import shutil

import pytest
import sentencepiece as spm

from xmodelvlm.errors import UserError
from xmodelvlm.model.tokenizer import XmodelTokenizer, load_tokenizer, save_tokenizer

TEXTS = [
    "Hello world",
    "What is the colour of the bus in the image?",
    "你好，世界！这是一个测试。",
    "图中有几只猫？ Answer in English.",
    "line one\nline two\n\nline four",
    "<image>\nWhat is it?",
    "a    b   c  ",
    "   leading spaces",
    "USER: hi ASSISTANT: yes</s>USER: more",
    "x<s>y<unk> z</s>",
    "</s>",
    "emoji 🙂 and ☃ and \t tabs",
    "",
]


def reference_ids(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """The released tokenizer's algorithm, written directly against sentencepiece."""
    special = {"<s>": sp.bos_id(), "</s>": sp.eos_id(), "<unk>": sp.unk_id()}
    ids = [sp.bos_id()]
    for piece in re.split(r"(<s>|</s>|<unk>)", text):
        if piece in special:
            ids.append(special[piece])
        elif piece:
            ids.extend(sp.encode(piece))
    return ids


@pytest.fixture(scope="module")
def sp(real_tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(real_tokenizer_dir / "xmodel_32000.model"))


@pytest.fixture(scope="module")
def tokenizer(real_tokenizer_dir):
    return load_tokenizer(real_tokenizer_dir)


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_raw_sentencepiece(tokenizer, sp, text):
    assert tokenizer(text).input_ids == reference_ids(sp, text)


def test_loads_shipped_files_without_remote_code(tokenizer, real_tokenizer_dir):
    shipped = json.loads((real_tokenizer_dir / "tokenizer_config.json").read_text())
    assert shipped["tokenizer_class"] == "XModelTokenizer" and "auto_map" in shipped
    assert isinstance(tokenizer, XmodelTokenizer)
    assert len(tokenizer) == 32000
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 2048


def test_newline_is_byte_fallback(tokenizer):
    assert tokenizer.convert_ids_to_tokens(tokenizer("\n").input_ids) == ["<s>", "▁", "<0x0A>"]


def test_no_eos_added_and_special_strings_become_ids(tokenizer):
    ids = tokenizer("yes</s>").input_ids
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(2) == 1
    assert tokenizer("yes").input_ids[-1] != 2


@pytest.mark.parametrize("text", ["Hello world", "你好，世界！", "a\nb", "What colour? Red."])
def test_decode_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_batch_padding_right_with_unk(tokenizer):
    batch = tokenizer(["a b c d", "a"], padding=True, return_tensors="pt")
    assert batch.input_ids[1, -1].item() == 0 and batch.attention_mask[1].tolist()[-1] == 0


def test_save_round_trip_names_our_class(tokenizer, tmp_path, sp):
    save_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "XmodelTokenizer" and "auto_map" not in config
    again = load_tokenizer(tmp_path)
    for text in TEXTS:
        assert again(text).input_ids == reference_ids(sp, text)


def test_missing_or_ambiguous_model_file(tmp_path, real_tokenizer_dir):
    with pytest.raises(UserError, match="no SentencePiece tokenizer"):
        load_tokenizer(tmp_path)
    shutil.copy(real_tokenizer_dir / "xmodel_32000.model", tmp_path / "a.model")
    shutil.copy(real_tokenizer_dir / "xmodel_32000.model", tmp_path / "b.model")
    with pytest.raises(UserError, match="several"):
        load_tokenizer(tmp_path)
