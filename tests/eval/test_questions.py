"""Question readers (LLaVA JSONL, ScienceQA conversations, MMBench TSV), lazy images and the registry."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from eval_fixtures import (LETTER_SUFFIX, MMBENCH_HEADER, MMBENCH_ROWS, SQ, make_mme, make_mmbench, make_sqa,
                           mmbench_row, png_bytes, write_image, write_jsonl, write_mmbench_tsv)
from xmodelvlm.errors import UserError
from xmodelvlm.eval.benchmarks import BENCHMARKS, DEFAULT_DATA_ROOT, get_benchmark
from xmodelvlm.eval.questions import (OPTION_LETTER_SUFFIX_CN, ImageLoadError, ImageRef, read_llava_jsonl,
                                      read_mmbench_tsv, read_sqa_conversations)


# ---------------------------------------------------------------------------------------------------------
# LLaVA JSONL
# ---------------------------------------------------------------------------------------------------------

def test_llava_jsonl_keeps_ids_text_and_metadata(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": 7, "image": "a.jpg", "text": "Is it red?" + SQ, "category": "random"},
        {"question_id": "artwork/images/1.jpg", "image": "artwork/images/1.jpg", "text": "Art?"},
        {"question_id": 9, "text": "A text-only question."},
    ])
    questions = read_llava_jsonl(path, tmp_path / "images")
    assert [q.question_id for q in questions] == [7, "artwork/images/1.jpg", 9]  # JSON types kept
    assert questions[0].text == "Is it red?" + SQ  # used as is, suffix included
    assert questions[0].metadata == {"category": "random"}
    assert questions[0].image.path == tmp_path / "images" / "a.jpg"
    assert questions[0].image.relpath == "a.jpg"
    assert questions[2].image is None


def test_llava_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "image": "a.jpg", "text": "t"}\n\n   \n')
    assert len(read_llava_jsonl(path, tmp_path)) == 1


@pytest.mark.parametrize("content, expected", [
    ('{"question_id": 1, "text": "ok"}\nnot json\n', ["q.jsonl", "line 2", "not valid JSON"]),
    ('{"question_id": 1, "image": "a.jpg"}\n', ["q.jsonl", "line 1", '"text"']),
    ('{"image": "a.jpg", "text": "t"}\n', ["q.jsonl", "line 1", '"question_id"']),
    ('{"question_id": 1, "text": 5}\n', ["q.jsonl", "line 1", '"text"', "string"]),
    ('[{"question_id": 1, "text": "t"}]\n', ["q.jsonl", "line 1", "expected an object"]),
    ('{"question_id": [1], "text": "t"}\n', ["q.jsonl", "line 1", '"question_id"']),
])
def test_malformed_jsonl_names_file_line_and_field(tmp_path: Path, content: str, expected: list[str]) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(UserError) as error:
        read_llava_jsonl(path, tmp_path)
    for fragment in expected:
        assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_question_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="question file not found"):
        read_llava_jsonl(tmp_path / "absent.jsonl", tmp_path)


# ---------------------------------------------------------------------------------------------------------
# ImageRef
# ---------------------------------------------------------------------------------------------------------

def test_image_ref_loads_any_mode_as_rgb(tmp_path: Path) -> None:
    path = write_image(tmp_path / "gray.png", size=(5, 2), mode="L", color=128)
    image = ImageRef.from_file(3, tmp_path, "gray.png").load()
    assert image.mode == "RGB" and image.size == (5, 2)
    rgba = ImageRef.from_base64(4, base64.b64encode(png_bytes(mode="RGBA", color=(1, 2, 3, 4))).decode()).load()
    assert rgba.mode == "RGB"


def test_image_ref_missing_file_names_question_and_path(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as error:
        ImageRef.from_file("q-17", tmp_path, "nope.jpg").load()
    assert "q-17" in str(error.value) and "nope.jpg" in str(error.value)


def test_image_ref_corrupt_file_and_bad_base64(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        ImageRef.from_file(1, tmp_path, "bad.jpg").load()
    truncated = png_bytes(size=(64, 64))[:60]
    (tmp_path / "cut.png").write_bytes(truncated)
    with pytest.raises(ImageLoadError, match="cut.png"):
        ImageRef.from_file(2, tmp_path, "cut.png").load()
    with pytest.raises(ImageLoadError, match="question 5"):
        ImageRef.from_base64(5, "!!!not base64!!!").load()


def test_image_load_error_is_not_a_user_error() -> None:
    # The answering engine catches ImageLoadError per question; a UserError would abort the whole run.
    assert not issubclass(ImageLoadError, UserError)


# ---------------------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------------------

def test_sqa_reader_builds_llava_prompt(data_root: Path) -> None:
    make_sqa(data_root)
    questions = get_benchmark("sqa").read_questions(data_root)
    by_id = {q.question_id: q for q in questions}
    with_image, without_image = by_id["1"], by_id["2"]
    assert with_image.text == ("Context: none.\nQuestion: Question 1?\nOptions: (A) choice 0 (B) choice 1 "
                               "(C) choice 2" + LETTER_SUFFIX)
    assert "<image>" not in with_image.text
    assert with_image.image.path == data_root / "scienceqa/images/test/1/image.png"
    assert with_image.image.load().size == (4, 3)
    assert without_image.image is None
    assert without_image.text.startswith("Context: none.\nQuestion: Question 2?")


def test_sqa_reader_rejects_malformed_entries(tmp_path: Path) -> None:
    path = tmp_path / "llava_test_CQM-A.json"
    path.write_text(json.dumps([{"id": "1", "conversations": [{"from": "human", "value": "q"}]},
                                {"id": "2", "image": "x.png"}]))
    with pytest.raises(UserError) as error:
        read_sqa_conversations(path, tmp_path)
    assert "llava_test_CQM-A.json" in str(error.value) and "entry 1" in str(error.value)
    assert '"conversations"' in str(error.value)
    path.write_text('{"id": "1"}')
    with pytest.raises(UserError, match="expected a JSON list"):
        read_sqa_conversations(path, tmp_path)
    path.write_text('[{"id": "1", ')
    with pytest.raises(UserError, match="not valid JSON"):
        read_sqa_conversations(path, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------

def test_mmbench_prompt_options_hint_and_image(data_root: Path) -> None:
    make_mmbench(data_root)
    questions = get_benchmark("mmbench").read_questions(data_root)
    assert [q.question_id for q in questions] == [0, 1_000_000, 2_000_000, 1, 1_000_001]
    first, animal = questions[0], questions[3]
    # hint "nan" is absent; D is empty, so only A-C are offered
    assert first.text == "What color is the ball?\nA. red\nB. blue\nC. green" + LETTER_SUFFIX
    assert first.metadata["options"] == {"A": "red", "B": "blue", "C": "green"}
    assert first.metadata["answer"] == "B" and first.metadata["category"] == "color"
    assert first.metadata["split"] == "dev" and first.metadata["index"] == 0
    # a present hint comes first; C is "nan", and LLaVA stops at the first absent option (D is dropped)
    assert animal.text == "Look closely.\nWhich animal is shown?\nA. cat\nB. dog" + LETTER_SUFFIX
    image = first.image.load()
    assert image.mode == "RGB" and image.size == (4, 3)
    assert "image" not in first.metadata["tsv_row"]  # the big base64 cell is not copied around


def test_mmbench_cn_suffix(data_root: Path) -> None:
    make_mmbench(data_root, name="mmbench/mmbench_dev_cn_20231003.tsv")
    question = get_benchmark("mmbench_cn").read_questions(data_root)[0]
    assert question.text.endswith("\nC. green" + OPTION_LETTER_SUFFIX_CN)
    assert OPTION_LETTER_SUFFIX_CN == "\n请直接回答选项字母。"


def test_mmbench_test_split_without_answer_column(tmp_path: Path) -> None:
    header = [c for c in MMBENCH_HEADER if c != "answer"]
    path = write_mmbench_tsv(tmp_path / "test.tsv", MMBENCH_ROWS[:1], header=header)
    question = read_mmbench_tsv(path)[0]
    assert question.metadata["answer"] is None


def test_mmbench_large_base64_cell_and_corrupt_image(tmp_path: Path) -> None:
    big = base64.b64encode(png_bytes(size=(600, 600), color=(1, 2, 3)) + b"\0" * 300_000).decode()
    rows = [mmbench_row(5, "Q?", "nan", ["x", "y", "", ""], "A", "c", image=big),
            mmbench_row(6, "Q?", "nan", ["x", "y", "", ""], "A", "c", image="AAAA")]
    questions = read_mmbench_tsv(write_mmbench_tsv(tmp_path / "m.tsv", rows))
    assert len(questions[0].image.base64_data) > 131072  # larger than csv's default field limit
    assert questions[0].image.load().size == (600, 600)
    with pytest.raises(ImageLoadError, match="question 6"):
        questions[1].image.load()


def test_mmbench_malformed_tsv(tmp_path: Path) -> None:
    header = [c for c in MMBENCH_HEADER if c != "question"]
    with pytest.raises(UserError, match='m.tsv: header has no column "question"'):
        read_mmbench_tsv(write_mmbench_tsv(tmp_path / "m.tsv", MMBENCH_ROWS[:1], header=header))
    bad_index = dict(MMBENCH_ROWS[0], index="first")
    with pytest.raises(UserError) as error:
        read_mmbench_tsv(write_mmbench_tsv(tmp_path / "m.tsv", [bad_index]))
    assert "m.tsv" in str(error.value) and "row 1" in str(error.value) and '"index"' in str(error.value)
    (tmp_path / "short.tsv").write_text("\t".join(MMBENCH_HEADER) + "\n0\tQ?\n")
    with pytest.raises(UserError, match="row 1"):
        read_mmbench_tsv(tmp_path / "short.tsv")


# ---------------------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------------------

def test_registry_has_the_nine_benchmarks() -> None:
    assert set(BENCHMARKS) == {"gqa", "mmbench", "mmbench_cn", "mme", "pope", "sqa", "textvqa", "vizwiz", "mmvet"}
    assert DEFAULT_DATA_ROOT == Path("playground/data/eval")
    assert BENCHMARKS["mmvet"].stop_at_newline is False
    assert all(b.stop_at_newline for name, b in BENCHMARKS.items() if name != "mmvet")
    assert BENCHMARKS["pope"].max_new_tokens == 128
    assert BENCHMARKS["mmvet"].max_new_tokens >= 512
    assert BENCHMARKS["mme"].question_file == "MME/llava_mme.jsonl"
    assert BENCHMARKS["mmbench"].image_folder is None


def test_unknown_benchmark_lists_known_names() -> None:
    with pytest.raises(UserError) as error:
        get_benchmark("POPE")
    assert "pope" in str(error.value) and "mmvet" in str(error.value)


def test_check_data_names_what_to_download_and_where(data_root: Path) -> None:
    with pytest.raises(UserError) as error:
        get_benchmark("gqa").check_data(data_root)
    message = str(error.value)
    assert "\n" not in message
    assert str(data_root / "gqa/llava_gqa_testdev_balanced.jsonl") in message
    assert str(data_root / "gqa/data/images") in message and "download" in message
    make_mme(data_root)
    get_benchmark("mme").check_data(data_root)                    # questions + images present
    get_benchmark("mme").check_data(data_root, for_scoring=True)  # ground truth present


def test_check_data_command_exits_2_with_one_line_and_does_not_import_torch(data_root: Path) -> None:
    """`python -m xmodelvlm.eval.benchmarks BENCH`: the eval scripts' check before answering, in a fraction of a
    second (the same check through `xmodelvlm.eval.answer` first imports torch and transformers: ~7 s on CPU)."""
    import subprocess
    import sys

    def check(*args: str) -> subprocess.CompletedProcess:
        code = ("import sys; from xmodelvlm.errors import run_cli; from xmodelvlm.eval.benchmarks import main; "
                "code = 0\ntry: run_cli(main, sys.argv[1:])\nexcept SystemExit as e: code = e.code\n"
                "print('torch' in sys.modules); sys.exit(code)")
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)

    missing = check("mme", "--data-root", str(data_root))
    assert missing.returncode == 2 and missing.stdout.strip() == "False"
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert missing.stderr.startswith("error: mme: missing") and "MME_Benchmark_release_version" in missing.stderr
    make_mme(data_root)
    present = check("mme", "--data-root", str(data_root))
    assert (present.returncode, present.stdout.strip(), present.stderr) == (0, "False", "")
    other = check("mme", "--data-root", str(data_root), "--question-file", "nosuch.jsonl")
    assert other.returncode == 2 and "nosuch.jsonl (or fix --question-file)" in other.stderr
    assert check("nosuch").returncode == 2


def test_check_data_for_scoring_wants_ground_truth(data_root: Path) -> None:
    write_jsonl(data_root / "gqa/llava_gqa_testdev_balanced.jsonl", [{"question_id": "1", "text": "q"}])
    with pytest.raises(UserError, match="testdev_balanced_questions.json"):
        get_benchmark("gqa").check_data(data_root, for_scoring=True)


def test_question_file_override(data_root: Path) -> None:
    make_mmbench(data_root, name="mmbench/mmbench_test_20230712.tsv")
    benchmark = get_benchmark("mmbench")
    by_name = benchmark.read_questions(data_root, question_file="mmbench_test_20230712.tsv")
    absolute = benchmark.read_questions(data_root, question_file=data_root / "mmbench/mmbench_test_20230712.tsv")
    assert len(by_name) == len(absolute) == len(MMBENCH_ROWS)
    with pytest.raises(UserError, match="question file not found"):
        benchmark.read_questions(data_root, question_file="absent.tsv")
