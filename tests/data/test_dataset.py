"""LazySupervisedDataset / collator: formats, bad-data handling, truncation, lengths, batching."""
from __future__ import annotations

import logging
import pickle

import pytest
import torch
from data_helpers import conv, write_json, write_jsonl

from xmodelvlm import IGNORE_INDEX, IMAGE_TOKEN_INDEX, tokenizer_image_token
from xmodelvlm.data.dataset import (DataArguments, DataCollatorForSupervisedDataset, LazySupervisedDataset,
                                    make_supervised_data_module)
from xmodelvlm.errors import UserError

NUM_IMAGE_TOKENS = 4


@pytest.fixture
def build(tokenizer, image_processor, image_dir):
    def make(*paths, version="v1", max_length=2048, **data_kwargs):
        data_kwargs.setdefault("image_folder", str(image_dir))
        args = DataArguments(data_path=[str(p) for p in paths], **data_kwargs)
        return LazySupervisedDataset(args, tokenizer, image_processor, version=version,
                                     num_image_tokens=NUM_IMAGE_TOKENS, model_max_length=max_length)
    return make


def good(id, image="red.png"):
    return conv(("human", "<image>\nWhat color?"), ("gpt", "Red."), image=image, id=id)


def test_llava_records_load_and_items_have_the_interface_shape(build, tmp_path, tokenizer):
    records = [
        conv(("human", "What color is it?\n<image>"), ("gpt", "Red."), ("human", "Sure?"), ("gpt", "Yes."),
             image="red.png", id=7),                                          # integer id, image token at the end
        conv(("user", "Say hi"), ("assistant", "hi"), id="text-only"),       # text only, user/assistant roles
    ]
    ds = build(write_json(tmp_path / "mix.json", records))
    assert len(ds) == 2 and ds.skip_stats == {}
    assert ds.samples[0].turns[0][1] == "<image>\nWhat color is it?"         # moved to the front, as LLaVA does
    item = ds[0]
    assert set(item) == {"input_ids", "labels", "image", "id"}
    assert item["id"] == "7"
    assert item["input_ids"].dtype == torch.long and item["labels"].shape == item["input_ids"].shape
    assert item["image"].shape == (3, 28, 28) and item["image"].dtype == torch.float32
    assert (item["input_ids"] == IMAGE_TOKEN_INDEX).sum() == 1
    prompt = ds.encoder(list(ds.samples[0].turns)).prompt
    assert item["input_ids"].tolist() == tokenizer_image_token(prompt, tokenizer)
    supervised = [tokenizer.convert_ids_to_tokens(int(t)) for t in item["labels"] if t != IGNORE_INDEX]
    assert supervised == ["▁Red", ".", "</s>", "▁Yes", ".", "</s>"]
    text = ds[1]
    assert "image" not in text and IMAGE_TOKEN_INDEX not in text["input_ids"].tolist()


def test_jsonl_and_several_files_are_concatenated(build, tmp_path):
    first = write_json(tmp_path / "a.json", [good("a0"), good("a1")])
    second = write_jsonl(tmp_path / "b.jsonl", [good("b0", "blue.png")])
    (tmp_path / "b.jsonl").write_text((tmp_path / "b.jsonl").read_text() + "\n\n")  # blank lines are fine
    ds = build(first, second)
    assert [ds[i]["id"] for i in range(len(ds))] == ["a0", "a1", "b0"]


def test_pretrain_caption_sample_with_plain(build, tmp_path, tokenizer):
    record = conv(("human", "<image>\nRender a clear and concise summary of the photo."),
                  ("gpt", "a red square"), image="red.png", id="000000033471")
    ds = build(write_json(tmp_path / "pretrain.json", [record]), version="plain")
    item = ds[0]
    assert item["input_ids"][:2].tolist() == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert item["labels"][:2].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    assert item["labels"][2:].tolist() == item["input_ids"][2:].tolist()


def test_pad_vs_square_aspect(build, tmp_path):
    path = write_json(tmp_path / "d.json", [good("wide")])                   # red.png is 40×20
    padded = build(path, image_aspect_ratio="pad")[0]["image"]
    cropped = build(path, image_aspect_ratio="square")[0]["image"]
    # pad: the top rows are the CLIP mean colour (≈ 0 after normalisation); crop: red everywhere
    assert padded[:, 0, :].abs().max() < 0.05
    assert torch.allclose(cropped[:, 0, :], cropped[:, 14, :])
    assert cropped[0, 0, 0] > 1.5 and cropped[2, 0, 0] < -1.0


def test_lengths_follow_llava_modality_convention(build, tmp_path):
    records = [conv(("human", "<image>\none two"), ("gpt", "three"), image="red.png"),
               conv(("human", "one two three"), ("gpt", "four five"))]
    ds = build(write_json(tmp_path / "d.json", records))
    # words (the <image> marker counts as one, as in LLaVA's split) + image tokens; text-only negative
    assert ds.modality_lengths == [4 + NUM_IMAGE_TOKENS, -5]
    assert ds.lengths == [4 + NUM_IMAGE_TOKENS, 5]


BAD_RECORDS = {
    "no reply": conv(("human", "<image>\nWhat?"), image="red.png", id="bad-no-gpt"),
    "wrong role order": conv(("human", "a"), ("human", "b"), ("gpt", "c"), id="bad-order"),
    "non-string value": {"id": "bad-value", "conversations": [{"from": "human", "value": ["x"]},
                                                               {"from": "gpt", "value": "y"}]},
    "no conversation": {"id": "bad-empty", "image": "red.png", "conversations": []},
    "image only": conv(("human", "<image>"), ("gpt", " "), image="red.png", id="bad-image-only"),
    "empty reply": conv(("human", "q"), ("gpt", "  "), id="bad-empty-reply"),
    "malformed turn": conv(("robot", "q"), ("gpt", "a"), id="bad-role"),
    "stray <image>": conv(("human", "<image>\nq"), ("gpt", "a"), id="bad-stray"),     # no image field
    "special token in reply": conv(("human", "q"), ("gpt", "stop</s> here"), id="bad-eos"),
    "not an object": ["not", "a", "dict"],
    "missing image": good("bad-missing", image="nope.png"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_each_bad_record_is_skipped_counted_and_logged(build, tmp_path, caplog, kind):
    records = [good("ok-1"), BAD_RECORDS[kind], good("ok-2")]
    path = write_json(tmp_path / "d.json", records)
    with caplog.at_level(logging.WARNING, logger="xmodelvlm.data"):
        ds = build(path)
    assert len(ds) == 2 and ds.skip_stats == {kind: 1}
    bad_id = BAD_RECORDS[kind]["id"] if isinstance(BAD_RECORDS[kind], dict) else "d.json:1"
    lines = [r.getMessage() for r in caplog.records if r.name == "xmodelvlm.data" and r.levelno == logging.WARNING]
    assert len(lines) == 1 and bad_id in lines[0] and kind in lines[0]
    with pytest.raises(UserError, match=rf"{bad_id}.*{kind}"):
        build(path, strict_data=True)


def test_leading_gpt_and_trailing_human_turns_are_dropped(build, tmp_path):
    record = conv(("gpt", "Hello! How can I help?"), ("human", "Name a colour."), ("gpt", "Red."),
                  ("human", "unanswered"), id="sharegpt")
    ds = build(write_json(tmp_path / "d.json", [record]))
    assert [role for role, _ in ds.samples[0].turns] == ["human", "gpt"]


def test_corrupt_image_is_replaced_by_the_next_sample_deterministically(build, tmp_path, caplog):
    path = write_json(tmp_path / "d.json", [good("a"), good("broken", "corrupt.png"), good("c", "blue.png")])
    ds = build(path)
    assert len(ds) == 3                                   # the file exists: only decoding can tell
    with caplog.at_level(logging.WARNING, logger="xmodelvlm.data"):
        assert ds[1]["id"] == "c"
    assert ds.skip_stats == {"unreadable image": 1}
    assert any("broken" in r.getMessage() and "unreadable image" in r.getMessage() for r in caplog.records)
    assert ds[1]["id"] == "c" and ds.skip_stats == {"unreadable image": 1}   # same answer, counted once
    fresh = build(path)
    assert fresh[1]["id"] == "c"                          # a resumed run (fresh process) sees the same item
    with pytest.raises(UserError, match="broken.*unreadable image"):
        build(path, strict_data=True)[1]


def test_cached_samples_are_built_once_and_stay_whole(build, tmp_path, image_dir):
    """--cache_samples: the second epoch reads nothing from disk (here: the image is gone by then) and gets the very
    same sample; a caller that changes its copy of an item leaves the cache whole; bad samples stay skipped."""
    path = write_json(tmp_path / "d.json", [good("a"), good("broken", "corrupt.png"), good("c", "blue.png")])
    cached, plain = build(path, cache_samples=True), build(path)
    first = [cached[i] for i in range(3)]
    (image_dir / "red.png").unlink()
    (image_dir / "blue.png").unlink()
    for i, want in enumerate(first):
        again = cached[i]
        assert again["id"] == want["id"] and torch.equal(again["input_ids"], want["input_ids"])
        assert torch.equal(again["image"], want["image"])
    assert [item["id"] for item in first] == ["a", "c", "c"] and cached.skip_stats == {"unreadable image": 1}
    cached[0].pop("image")
    assert "image" in cached[0]
    with pytest.raises(UserError, match="every sample failed"):   # without the cache the images are gone
        plain[0]


def test_replacement_wraps_around_to_the_start(build, tmp_path):
    ds = build(write_json(tmp_path / "d.json", [good("a"), good("z", "corrupt.png")]))
    assert ds[1]["id"] == "a"


def test_mostly_bad_data_stops_with_a_clear_message(build, tmp_path, caplog):
    records = [good("ok")] + [good(f"m{i}", image=f"missing{i}.png") for i in range(3)]
    path = write_json(tmp_path / "d.json", records)
    with caplog.at_level(logging.WARNING, logger="xmodelvlm.data"):
        with pytest.raises(UserError, match=r"3/4 samples skipped \(missing image ×3\): check --image_folder; "
                                            r"first: m0 .*missing0\.png"):
            build(path)
    assert not caplog.records          # one clear error, not a flood of per-sample lines first
    assert len(build(path, max_skip_fraction=0.8)) == 1
    with pytest.raises(UserError, match="no usable samples"):
        build(write_json(tmp_path / "none.json", records[1:]), max_skip_fraction=1.0)


def test_sample_fully_masked_after_truncation_is_skipped(build, tmp_path, tokenizer):
    long_question = "word " * 300
    records = [conv(("human", long_question), ("gpt", "Red."), id="too-long"), good("fits")]
    ds = build(write_json(tmp_path / "d.json", records), max_length=120)
    assert ds[0]["id"] == "fits"
    assert ds.skip_stats == {"fully masked": 1}
    fits = ds[1]
    assert fits["input_ids"].numel() + NUM_IMAGE_TOKENS - 1 <= 120


def test_truncation_keeps_image_and_partial_reply(build, tmp_path):
    record = conv(("human", "<image>\nDescribe."), ("gpt", "one two three four five six seven eight"), image="red.png")
    ds = build(write_json(tmp_path / "d.json", [record]))
    full = ds[0]
    expanded = full["input_ids"].numel() + NUM_IMAGE_TOKENS - 1
    short = build(write_json(tmp_path / "e.json", [record]), max_length=expanded - 3)[0]
    assert short["input_ids"].numel() == full["input_ids"].numel() - 3
    assert short["input_ids"].tolist() == full["input_ids"][:-3].tolist()
    assert (short["labels"] != IGNORE_INDEX).sum() == (full["labels"] != IGNORE_INDEX).sum() - 3
    assert "image" in short


def test_image_that_does_not_fit_skips_the_sample(build, tmp_path, tokenizer):
    path = write_json(tmp_path / "d.json", [good("img")])
    before_image = build(path)[0]["input_ids"].tolist().index(IMAGE_TOKEN_INDEX)
    ds = build(path, max_length=before_image + NUM_IMAGE_TOKENS - 1)       # one position short for the image
    with pytest.raises(UserError, match="every sample failed"):
        ds[0]
    assert ds.skip_stats == {"image cut by truncation": 1}


def test_malformed_json_names_file_and_line(build, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"id": 1, "conversations": []},\n {"id": 2,, }\n]\n')
    with pytest.raises(UserError, match=r"broken\.json line 3"):
        build(broken)
    lines = tmp_path / "broken.jsonl"
    lines.write_text('{"id": 1, "conversations": []}\n{"id": 2\n')
    with pytest.raises(UserError, match=r"broken\.jsonl line 2"):
        build(lines)
    with pytest.raises(UserError, match="data file not found"):
        build(tmp_path / "absent.json")


def test_collator_pads_right_masks_by_length_and_keeps_image_order(build, tmp_path, tokenizer):
    records = [good("red", "red.png"), conv(("human", "Say <unk> please"), ("gpt", "ok"), id="text"),
               conv(("human", "<image>\nAnd this one? Describe it in a few words."), ("gpt", "Blue."),
                    image="blue.png", id="blue")]
    ds = build(write_json(tmp_path / "d.json", records))
    items = [ds[i] for i in range(3)]
    batch = DataCollatorForSupervisedDataset(tokenizer=tokenizer)(items)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "images"}
    longest = max(len(item["input_ids"]) for item in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == item["input_ids"].tolist()
        assert batch["labels"][row, :n].tolist() == item["labels"].tolist()
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
    assert tokenizer.unk_token_id in items[1]["input_ids"].tolist()        # a real <unk> is attended to
    assert batch["images"].shape == (2, 3, 28, 28)
    assert torch.equal(batch["images"][0], items[0]["image"]) and torch.equal(batch["images"][1], items[2]["image"])
    assert "images" not in DataCollatorForSupervisedDataset(tokenizer=tokenizer)([items[1]])


def test_make_supervised_data_module_and_dataloader(tokenizer, image_processor, image_dir, tmp_path):
    path = write_json(tmp_path / "d.json", [good(str(i), "red.png" if i % 2 else "blue.png") for i in range(5)])
    args = DataArguments(data_path=[str(path)], image_folder=str(image_dir))
    module = make_supervised_data_module(tokenizer, image_processor, args, version="v1",
                                         num_image_tokens=NUM_IMAGE_TOKENS, model_max_length=2048)
    assert module["eval_dataset"] is None
    loader = torch.utils.data.DataLoader(module["train_dataset"], batch_size=2, collate_fn=module["data_collator"])
    batches = list(loader)
    assert [b["images"].shape[0] for b in batches] == [2, 2, 1]
    restored = pickle.loads(pickle.dumps(module["train_dataset"]))           # spawn-started workers pickle it
    assert restored[0]["input_ids"].tolist() == module["train_dataset"][0]["input_ids"].tolist()


def test_data_arguments_parse_from_seed_flags(tmp_path):
    from transformers import HfArgumentParser
    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--data_path", "a.json", "b.jsonl", "--image_folder", "imgs", "--image_aspect_ratio", "pad",
         "--lazy_preprocess", "True", "--strict_data", "True", "--max_skip_fraction", "0.1",
         "--cache_samples", "True"])
    assert args.data_path == ["a.json", "b.jsonl"] and args.image_folder == "imgs"
    assert args.strict_data is True and args.max_skip_fraction == 0.1 and args.cache_samples is True
    assert DataArguments(data_path="one.json").data_path == ["one.json"]
    with pytest.raises(UserError, match="max_skip_fraction"):
        DataArguments(data_path=["x"], max_skip_fraction=2.0)


def test_text_only_training_ignores_images(build, tmp_path):
    ds = build(write_json(tmp_path / "d.json", [good("a", image="nope.png")]), is_multimodal=False)
    item = ds[0]
    assert "image" not in item and IMAGE_TOKEN_INDEX not in item["input_ids"].tolist()
    assert ds.samples[0].turns[0][1] == "What color?"


def test_only_rank_zero_logs_init_skips(build, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.WARNING, logger="xmodelvlm.data"):
        ds = build(write_json(tmp_path / "d.json", [good("ok"), good("gone", image="nope.png")]))
    assert ds.skip_stats == {"missing image": 1} and not caplog.records


def test_training_prompt_equals_what_the_inference_cli_feeds(build, tmp_path, tokenizer):
    from xmodelvlm import get_conv_template
    turns = [("human", "Describe the image.\n<image>"), ("gpt", "A red square."), ("human", "你确定吗？"), ("gpt", "是的")]
    ds = build(write_json(tmp_path / "d.json", [conv(*turns, image="red.png", id="mt")]))
    item = ds[0]
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    starts = [t for t in range(len(labels)) if labels[t] != IGNORE_INDEX and (t == 0 or labels[t - 1] == IGNORE_INDEX)]
    assert len(starts) == 2
    chat = get_conv_template("v1")            # what xmodelvlm.serve does: "<image>\n" + question, then open turn
    for k, start in enumerate(starts):
        question = turns[2 * k][1].replace("<image>", "").strip()
        chat.append_message(chat.roles[0], ("<image>\n" + question) if k == 0 else question)
        chat.append_message(chat.roles[1], None)
        assert ids[:start] == tokenizer_image_token(chat.get_prompt(), tokenizer)
        chat.messages[-1][1] = turns[2 * k + 1][1]


def test_dataloader_worker_processes_read_the_packed_samples(tokenizer, image_processor, image_dir, tmp_path):
    records = [good("中文-0"), conv(("human", "你好"), ("gpt", "你好！"), id="中文-1")]
    args = DataArguments(data_path=[str(write_json(tmp_path / "d.json", records))], image_folder=str(image_dir))
    module = make_supervised_data_module(tokenizer, image_processor, args, version="v1",
                                         num_image_tokens=NUM_IMAGE_TOKENS, model_max_length=2048)
    loader = torch.utils.data.DataLoader(module["train_dataset"], batch_size=1, num_workers=1,
                                         collate_fn=lambda items: [item["id"] for item in items])
    assert [ids[0] for ids in loader] == ["中文-0", "中文-1"]


def test_jsonl_with_line_separator_characters_and_bom(build, tmp_path):
    path = tmp_path / "odd.jsonl"
    record = conv(("human", "one\u2028two"), ("gpt", "three\u2029four"), id="u2028")
    write_jsonl(path, [record])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = build(f"{tmp_path}/./odd.jsonl")                      # an unnormalised path works too
    assert ds[0]["id"] == "u2028"
