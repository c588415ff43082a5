"""The answering engine: prompts, batched == unbatched, chunk + merge, resume after a kill, bad input."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from eval_fixtures import SQ, make_mme, make_pope, write_image, write_json, write_jsonl
from xmodelvlm.constants import IMAGE_TOKEN_INDEX
from xmodelvlm.errors import UserError, run_cli
from xmodelvlm.eval import answer as engine
from xmodelvlm.eval.answer import (Answerer, DecodingSettings, answer_questions, build_prompt, clean_answer,
                                   get_chunk, model_name_from_path)
from xmodelvlm.eval.benchmarks import get_benchmark
from xmodelvlm.eval.merge import merge_answer_files, read_answer_lines
from xmodelvlm.eval.questions import Question

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
NUM_POPE = 12


# ---------------------------------------------------------------------------------------------------------
# fixtures: the tiny checkpoint loaded once, small benchmark folders with images
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    from xmodelvlm import load_pretrained_model
    tokenizer, model, image_processor, _ = load_pretrained_model(tiny_checkpoint, device="cpu", dtype="float32")
    return tokenizer, model, image_processor


def make_answerer(loaded, max_new_tokens: int = 6, stop_at_newline: bool = False, strict: bool = False,
                  model=None) -> Answerer:
    tokenizer, tiny_model, image_processor = loaded
    settings = DecodingSettings(max_new_tokens=max_new_tokens, stop_at_newline=stop_at_newline)
    return Answerer(tokenizer, model or tiny_model, image_processor, settings, "v1", strict)


def pope_images(root: Path) -> None:
    """Images of different sizes and aspect ratios (padding to square differs per image)."""
    for qid in range(1, NUM_POPE + 1):
        write_image(root / f"pope/val2014/COCO_val2014_{qid:012d}.jpg", size=(8 + 3 * qid, 30 - qid),
                    color=(20 * qid, 255 - 15 * qid, (40 * qid) % 256))


@pytest.fixture
def pope_root(data_root: Path) -> Path:
    make_pope(data_root)
    pope_images(data_root)
    return data_root


def mixed_sqa(root: Path, count: int = 9) -> list[Question]:
    """ScienceQA-layout questions of very different prompt lengths, a third of them text-only."""
    entries = []
    for i in range(count):
        context = " ".join(["the plant needs light and water"] * (i * 3 % 7))
        value = f"Context: {context}\nQuestion: What does item {i} need?\nOptions: (A) light (B) sand"
        entry = {"id": str(100 + i), "conversations": [{"from": "human", "value": value},
                                                       {"from": "gpt", "value": "A"}]}
        if i % 3 != 1:
            entry["image"] = f"{100 + i}/image.png"
            entry["conversations"][0]["value"] = "<image>\n" + value
            write_image(root / f"scienceqa/images/test/{100 + i}/image.png", size=(5 + 4 * i, 12),
                        color=(30 * i, 90, 200 - 20 * i))
        entries.append(entry)
    write_json(root / "scienceqa/llava_test_CQM-A.json", entries)
    return get_benchmark("sqa").read_questions(root)


def texts_by_question(path: Path) -> list[tuple]:
    return [(r.record["question_id"], r.record["prompt"], r.record["text"]) for r in read_answer_lines(path).answers]


# ---------------------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------------------

def test_prompt_is_llava_v1_with_image_first(loaded) -> None:
    with_image = Question(1, "Is there a dog?" + SQ, image=object(), metadata={})
    text_only = Question(2, "What is 2+2?", image=None, metadata={})
    assert build_prompt(with_image) == f"{SYSTEM} USER: <image>\nIs there a dog?{SQ} ASSISTANT:"
    assert build_prompt(text_only) == f"{SYSTEM} USER: What is 2+2? ASSISTANT:"
    tokenizer = loaded[0]
    ids_image, ids_text = engine.build_prompts([with_image, text_only], tokenizer)
    assert ids_image.count(IMAGE_TOKEN_INDEX) == 1 and ids_text.count(IMAGE_TOKEN_INDEX) == 0
    assert ids_image[0] == tokenizer.bos_token_id and ids_image.index(IMAGE_TOKEN_INDEX) > 1


def test_clean_answer_strips_and_cuts_at_newline_only_when_asked() -> None:
    assert clean_answer("  Yes\nbecause it is.  ", True) == "Yes"
    assert clean_answer("\n\n Yes \nno", True) == "Yes"  # leading blank lines are stripped first
    assert clean_answer("  Line one.\nLine two. ", False) == "Line one.\nLine two."


def test_get_chunk_is_llavas_contiguous_slices() -> None:
    items = list(range(10))
    assert [get_chunk(items, 4, k) for k in range(4)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert get_chunk(list(range(9)), 4, 3) == []  # LLaVA would crash; an empty chunk is answered trivially
    with pytest.raises(UserError, match="--chunk-idx"):
        get_chunk(items, 2, 2)


def test_model_name_from_path_as_llava() -> None:
    assert model_name_from_path("/ckpts/xmodelvlm-1.1b/") == "xmodelvlm-1.1b"
    assert model_name_from_path("runs/finetune/checkpoint-500") == "finetune_checkpoint-500"


# ---------------------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------------------

def test_batched_answers_equal_batch_size_one(loaded, data_root, tmp_path) -> None:
    questions = mixed_sqa(data_root)
    lengths = {len(ids) for ids in engine.build_prompts(questions, loaded[0])}
    assert len(lengths) > 3 and any(q.image is None for q in questions)
    results = {}
    for batch_size in (1, 3, 8):
        path = tmp_path / f"bs{batch_size}.jsonl"
        summary = answer_questions(make_answerer(loaded), questions, path, model_id="tiny", benchmark="sqa",
                                   batch_size=batch_size, progress=False)
        assert summary.answered == len(questions) and summary.failed == 0
        results[batch_size] = texts_by_question(path)
    # complete → written in question order, whatever order the length-sorted batches ran in
    assert [qid for qid, _, _ in results[1]] == [q.question_id for q in questions]
    texts = [text for _, _, text in results[1]]
    assert all(texts) and len(set(texts)) > len(texts) // 2  # real, differing answers: the check can fail
    assert results[3] == results[1]
    assert results[8] == results[1]


class NewlineBiasedHead(torch.nn.Module):
    """lm_head plus a bias on the newline byte, so a random model breaks its answers into lines."""

    def __init__(self, head: torch.nn.Linear, newline_id: int, bias: float):
        super().__init__()
        self.head, self.bias = head, torch.zeros(head.out_features)
        self.bias[newline_id] = bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden) + self.bias.to(hidden.dtype)


def test_newline_stop_gives_the_cut_answer(loaded, data_root, tmp_path) -> None:
    """Stopping a row at its first newline must give exactly the full answer cut at that newline."""
    tokenizer, model, _ = loaded
    questions = mixed_sqa(data_root)
    newline_id = tokenizer.convert_tokens_to_ids("<0x0A>")
    # Bias the newline logit by the 30% quantile of its gap to the best logit: about a third of the steps
    # then emit a newline, most answers have text before their first one.
    answerer = make_answerer(loaded)
    batch = answerer.prepare(questions, answerer.prompt_ids(questions))
    scores = model.generate(batch.input_ids, images=batch.images, attention_mask=batch.attention_mask,
                            max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True,
                            pad_token_id=0).scores
    gaps = torch.stack([step.max(dim=-1).values - step[:, newline_id] for step in scores[1:]]).flatten()
    newline_model = copy.deepcopy(model)
    newline_model.lm_head = NewlineBiasedHead(newline_model.lm_head, newline_id, float(gaps.quantile(0.3)))

    raw_path, stopped_path = tmp_path / "raw.jsonl", tmp_path / "stopped.jsonl"
    answer_questions(make_answerer(loaded, 10, stop_at_newline=False, model=newline_model), questions, raw_path,
                     model_id="t", benchmark="sqa", batch_size=1, progress=False)
    answer_questions(make_answerer(loaded, 10, stop_at_newline=True, model=newline_model), questions, stopped_path,
                     model_id="t", benchmark="sqa", batch_size=4, progress=False)
    raw = [text for _, _, text in texts_by_question(raw_path)]
    stopped = [text for _, _, text in texts_by_question(stopped_path)]
    assert sum("\n" in text for text in raw) >= 2  # the stop really happens in this test
    assert stopped == [clean_answer(text, stop_at_newline=True) for text in raw]


# ---------------------------------------------------------------------------------------------------------
# chunking, merging, resuming
# ---------------------------------------------------------------------------------------------------------

def test_chunks_merged_equal_one_run_in_question_order(loaded, pope_root, tmp_path, capsys) -> None:
    questions = get_benchmark("pope").read_questions(pope_root)
    single = tmp_path / "single.jsonl"
    answer_questions(make_answerer(loaded), questions, single, model_id="t", benchmark="pope", batch_size=4,
                     progress=False)
    chunk_files = []
    for k in (2, 0, 1):  # any order
        path = tmp_path / f"chunk_{k}.jsonl"
        answer_questions(make_answerer(loaded), get_chunk(questions, 3, k), path, model_id="t", benchmark="pope",
                         batch_size=3, use_prompt=False, progress=False)
        chunk_files.append(path)
    merged = tmp_path / "merged.jsonl"
    engine_merge = ["--bench", "pope", "--data-root", str(pope_root), "--chunks", str(tmp_path / "chunk_*.jsonl"),
                    "--output", str(merged), "--require-complete"]
    from xmodelvlm.eval import merge
    merge.main(engine_merge)
    assert "12/12 questions answered" in capsys.readouterr().err
    assert [qid for qid, _, _ in texts_by_question(merged)] == list(range(1, NUM_POPE + 1))
    assert texts_by_question(merged) == texts_by_question(single)


def test_merge_reports_missing_and_duplicates(pope_root, tmp_path, capsys) -> None:
    questions = get_benchmark("pope").read_questions(pope_root)
    records = [{"question_id": q.question_id, "prompt": q.text, "text": f"t{q.question_id}", "metadata": {}}
               for q in questions]
    write_jsonl(tmp_path / "a.jsonl", records[6:] + [dict(records[7], text="older")])
    write_jsonl(tmp_path / "b.jsonl", records[2:6] + [dict(records[7], text="newer"),
                                                       {"question_id": 99, "prompt": "?", "text": "x"}])
    out = tmp_path / "merged.jsonl"
    result = merge_answer_files(questions, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], out)
    err = capsys.readouterr().err
    assert "2 questions have no answer" in err and "question_id 1, 2" in err
    assert "2 answers repeat" in err and "1 answers match no question" in err
    lines = texts_by_question(out)
    assert [qid for qid, _, _ in lines] == list(range(3, NUM_POPE + 1)) + [99]  # question order, unknown last
    assert dict((qid, text) for qid, _, text in lines)[8] == "newer"  # the last answer wins, as in the scorers
    assert len(result.duplicates) == 2
    with pytest.raises(UserError, match="2 of 12 questions have no answer"):
        merge_answer_files(questions, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], out, require_complete=True)


def test_resume_after_kill_keeps_answers_and_drops_the_partial_line(loaded, pope_root, tmp_path, monkeypatch):
    questions = get_benchmark("pope").read_questions(pope_root)
    full = tmp_path / "full.jsonl"
    answer_questions(make_answerer(loaded), questions, full, model_id="t", benchmark="pope", batch_size=4,
                     progress=False)
    lines = full.read_text().splitlines()
    killed = tmp_path / "killed.jsonl"
    kept = 5
    killed.write_text("".join(line + "\n" for line in lines[:kept]) + lines[kept][: len(lines[kept]) // 2])

    generated = []
    answerer = make_answerer(loaded)
    original = answerer.generate
    monkeypatch.setattr(answerer, "generate", lambda batch: generated.extend(batch.questions) or original(batch))
    summary = answer_questions(answerer, questions, killed, model_id="t", benchmark="pope", batch_size=4,
                               progress=False)

    assert summary.skipped == kept and summary.answered == NUM_POPE - kept
    assert sorted(q.question_id for q in generated) == list(range(kept + 1, NUM_POPE + 1))  # nothing recomputed
    records = [json.loads(line) for line in killed.read_text().splitlines()]  # every line parses: partial gone
    assert [r["question_id"] for r in records] == list(range(1, NUM_POPE + 1))
    old_ids = [json.loads(line)["answer_id"] for line in lines]
    assert [r["answer_id"] for r in records[:kept]] == old_ids[:kept]
    assert not set(r["answer_id"] for r in records[kept:]) & set(old_ids)
    assert [r["text"] for r in records] == [json.loads(line)["text"] for line in lines]


def test_resume_keys_on_prompt_when_question_ids_repeat(loaded, data_root, tmp_path) -> None:
    make_mme(data_root)  # 6 questions on 3 images: question_id = image path, two questions each
    questions = get_benchmark("mme").read_questions(data_root)
    assert len({q.question_id for q in questions}) == 3
    path = tmp_path / "mme.jsonl"
    answer_questions(make_answerer(loaded), questions, path, model_id="t", benchmark="mme", batch_size=4,
                     progress=False)
    lines = path.read_text().splitlines()
    path.write_text(lines[1] + "\n" + lines[4] + "\n")  # the second question of two images survived
    summary = answer_questions(make_answerer(loaded), questions, path, model_id="t", benchmark="mme",
                               batch_size=4, progress=False)
    assert summary.skipped == 2 and summary.answered == 4
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["question_id"], r["prompt"]) for r in records] == [(q.question_id, q.text) for q in questions]
    assert records[1]["answer_id"] == json.loads(lines[1])["answer_id"]


def test_resume_refuses_to_mix_models(loaded, pope_root, tmp_path) -> None:
    questions = get_benchmark("pope").read_questions(pope_root)[:2]
    path = tmp_path / "a.jsonl"
    answer_questions(make_answerer(loaded), questions[:1], path, model_id="model-a", benchmark="pope",
                     progress=False)
    with pytest.raises(UserError, match="model-a"):
        answer_questions(make_answerer(loaded), questions, path, model_id="model-b", benchmark="pope",
                         progress=False)


def test_read_answer_lines_rejects_a_corrupt_middle_line(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "te\n{"question_id": 3, "text": "c"}\n')
    with pytest.raises(UserError, match=r"a.jsonl:2"):
        read_answer_lines(path)
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": "b"}')  # no final newline
    read = read_answer_lines(path)
    assert [a.record["question_id"] for a in read.answers] == [1, 2] and read.dropped_tail is None


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------

def test_bad_images_are_recorded_and_retried_on_resume(loaded, pope_root, tmp_path) -> None:
    image_dir = pope_root / "pope/val2014"
    missing = image_dir / f"COCO_val2014_{3:012d}.jpg"
    corrupt = image_dir / f"COCO_val2014_{5:012d}.jpg"
    missing.unlink()
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    questions = get_benchmark("pope").read_questions(pope_root)
    path = tmp_path / "answers.jsonl"
    summary = answer_questions(make_answerer(loaded), questions, path, model_id="t", benchmark="pope",
                               batch_size=4, progress=False)
    records = {r["question_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert summary.failed == 2 and len(records) == NUM_POPE
    for qid, image in ((3, missing), (5, corrupt)):
        assert records[qid]["text"] == "" and str(image) in records[qid]["metadata"]["error"]
    assert all(records[q]["text"] and records[q]["metadata"] == {} for q in records if q not in (3, 5))

    write_image(missing, size=(9, 9))
    write_image(corrupt, size=(9, 9))
    summary = answer_questions(make_answerer(loaded), questions, path, model_id="t", benchmark="pope",
                               batch_size=4, progress=False)
    assert summary.answered == 2 and summary.skipped == NUM_POPE - 2 and summary.failed == 0
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == NUM_POPE and all(r["text"] and not r["metadata"] for r in records)


def run_main(argv: list[str]) -> int:
    try:
        run_cli(engine.main, argv)
    except SystemExit as exc:
        return exc.code
    return 0


def test_cli_writes_llava_answers_for_its_chunk(tiny_checkpoint, pope_root, tmp_path, capsys) -> None:
    out = tmp_path / "chunk1.jsonl"
    argv = ["--model-path", str(tiny_checkpoint), "--bench", "pope", "--data-root", str(pope_root),
            "--answers-file", str(out), "--num-chunks", "2", "--chunk-idx", "1", "--batch-size", "4",
            "--max-new-tokens", "3", "--device", "cpu", "--no-progress"]
    assert run_main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in records] == list(range(7, NUM_POPE + 1))
    questions = {q.question_id: q for q in get_benchmark("pope").read_questions(pope_root)}
    for record in records:
        assert set(record) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
        assert record["prompt"] == questions[record["question_id"]].text
        assert record["model_id"] == tiny_checkpoint.name and record["metadata"] == {}
        assert isinstance(record["answer_id"], str) and len(record["answer_id"]) == 22  # shortuuid
    assert "answered 6" in capsys.readouterr().err
    assert run_main(argv) == 0  # rerun: nothing left, the file is unchanged
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert "all 6 questions of this chunk are answered" in capsys.readouterr().err


def test_strict_stops_at_a_bad_image_with_exit_2(tiny_checkpoint, pope_root, tmp_path, capsys) -> None:
    (pope_root / f"pope/val2014/COCO_val2014_{4:012d}.jpg").unlink()
    argv = ["--model-path", str(tiny_checkpoint), "--bench", "pope", "--data-root", str(pope_root),
            "--answers-file", str(tmp_path / "a.jsonl"), "--max-new-tokens", "2", "--device", "cpu",
            "--no-progress", "--strict"]
    assert run_main(argv) == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and "COCO_val2014_000000000004.jpg" in err_lines[0] and "--strict" in err_lines[0]


def test_malformed_question_file_is_one_line_exit_2(pope_root, tmp_path, capsys) -> None:
    question_file = pope_root / "pope/llava_pope_test.jsonl"
    lines = question_file.read_text().splitlines()
    broken = json.loads(lines[3])
    del broken["text"]
    lines[3] = json.dumps(broken)
    question_file.write_text("\n".join(lines) + "\n")
    argv = ["--model-path", str(tmp_path / "not-loaded"), "--bench", "pope", "--data-root", str(pope_root),
            "--answers-file", str(tmp_path / "a.jsonl")]
    assert run_main(argv) == 2  # fails on the questions, before the model is even looked at
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(question_file) in err[0] and "line 4" in err[0] and '"text"' in err[0]


def test_missing_dataset_is_one_line_exit_2(data_root, tmp_path, capsys) -> None:
    assert run_main(["--bench", "gqa", "--data-root", str(data_root), "--check-data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "llava_gqa_testdev_balanced.jsonl" in err[0] and "download" in err[0]
