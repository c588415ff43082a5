"""The nine scorers against hand-computed numbers, the answers-file join, and eval/score.py end to end."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from eval_fixtures import (TEXTVQA_EXPECTED_ACCURACY, answer, make_gqa, make_mmbench, make_mme, make_mmvet,
                           make_pope, make_sqa, make_textvqa, make_vizwiz, write_jsonl)
from xmodelvlm.errors import UserError
from xmodelvlm.eval.benchmarks import get_benchmark
from xmodelvlm.eval.scorers.answers import coverage_warnings, match_answers, read_answers
from xmodelvlm.eval.scorers.mmbench import extract_option_letter
from xmodelvlm.eval.scorers.mme import parse_mme_prediction
from xmodelvlm.eval.scorers.pope import parse_yes_no
from xmodelvlm.eval.scorers.sqa import parse_sqa_letter, predicted_choice_index
from xmodelvlm.eval.scorers.textvqa import question_from_prompt
from xmodelvlm.eval.scorers.vqa_normalize import normalize_vqa_answer, soft_accuracy
from xmodelvlm.eval.scorers.xlsx import column_letter

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKERS = {"pope": make_pope, "mme": make_mme, "sqa": make_sqa, "textvqa": make_textvqa, "gqa": make_gqa,
          "mmbench": make_mmbench, "vizwiz": make_vizwiz, "mmvet": make_mmvet}


def score(bench: str, data_root: Path, records: list[dict], out: Path) -> dict:
    answers_path = write_jsonl(out.parent / f"{out.name}-answers.jsonl", records)
    return get_benchmark(bench).score(data_root, answers_path, out)


# ---------------------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, parsed", [
    ("Yes", "yes"), ("No", "no"), ("no", "no"), ("not", "no"), ("There is not a dog", "no"),
    ("NO", "yes"), ("None", "yes"), ("Nope", "yes"), ("Not", "yes"),  # only exact "No"/"not"/"no" say no
    ("Yes. No", "yes"),          # only the text before the first "." counts
    ("no, there is none", "no"),  # "," is dropped before splitting
    ("No\nthere", "yes"),         # split on spaces only: "No\nthere" is one word
    ("", "yes"),
])
def test_pope_parse_reproduces_official_quirks(text: str, parsed: str) -> None:
    assert parse_yes_no(text) == parsed


def test_pope_hand_computed(data_root: Path, tmp_path: Path) -> None:
    metrics = score("pope", data_root, make_pope(data_root), tmp_path / "out")
    adversarial = metrics["adversarial"]  # TP 2, FN 1, FP 2, TN 1
    assert adversarial["accuracy"] == pytest.approx(50.0)
    assert adversarial["precision"] == pytest.approx(50.0)
    assert adversarial["recall"] == pytest.approx(200 / 3)
    assert adversarial["f1"] == pytest.approx(100 * 4 / 7)  # 2PR/(P+R) = (2/3)/(7/6)
    assert adversarial["yes_ratio"] == pytest.approx(400 / 6)
    popular = metrics["popular"]  # TP 1, TN 1, missing (label yes) and failed (label no)
    assert (popular["tp"], popular["tn"], popular["fp"], popular["fn"], popular["invalid"]) == (1, 1, 0, 0, 2)
    assert popular["accuracy"] == pytest.approx(50.0)
    assert popular["precision"] == pytest.approx(100.0)
    assert popular["recall"] == pytest.approx(50.0)
    assert popular["f1"] == pytest.approx(200 / 3)
    assert popular["yes_ratio"] == pytest.approx(25.0)
    assert metrics["random"]["f1"] == pytest.approx(100.0)
    assert metrics["f1"] == pytest.approx((100 * 4 / 7 + 200 / 3 + 100) / 3)
    assert metrics["accuracy"] == pytest.approx((50 + 50 + 100) / 3)
    assert (metrics["missing"], metrics["failed"], metrics["unknown"], metrics["duplicate"]) == (1, 1, 0, 0)
    assert metrics["examples"]["missing"] == [9]
    written = json.loads((tmp_path / "out/metrics.json").read_text())
    assert written["f1"] == pytest.approx(metrics["f1"]) and written["benchmark"] == "pope"


def test_pope_label_file_that_does_not_pair_fails_loudly(data_root: Path, tmp_path: Path) -> None:
    records = make_pope(data_root)
    labels = data_root / "pope/coco/coco_pope_random.json"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(UserError, match="coco_pope_random.json: label line 1"):
        score("pope", data_root, records, tmp_path / "out")
    labels.write_text(lines[0] + "\n")
    with pytest.raises(UserError, match="has 1 labels"):
        score("pope", data_root, records, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, parsed", [
    ("Yes", "yes"), ("no", "no"), ("Yes, it is.", "yes"), ("No.", "no"),
    ("Not sure", "no"),       # "not " contains "no"
    ("None", "no"), ("I think yes", "other"), ("The answer is yes", "other"), ("", "other"),
    ("yesno", "yes"),         # "yes" is looked for before "no"
    ("ano", "no"),            # anywhere in the first 4 characters
])
def test_mme_parse(text: str, parsed: str) -> None:
    assert parse_mme_prediction(text) == parsed


def test_mme_hand_computed(data_root: Path, tmp_path: Path) -> None:
    metrics = score("mme", data_root, make_mme(data_root), tmp_path / "out")
    # artwork: 3/4 right, 1/2 images with both right -> 75 + 50; code_reasoning: 1/2, 0/1 -> 50 + 0
    assert metrics["tasks"] == {"artwork": pytest.approx(125.0), "code_reasoning": pytest.approx(50.0)}
    assert metrics["perception"] == pytest.approx(125.0)
    assert metrics["cognition"] == pytest.approx(50.0)
    assert metrics["task_details"]["artwork"]["other"] == 1
    assert metrics["missing"] == 0


def test_mme_joins_on_prompt_and_counts_missing(data_root: Path, tmp_path: Path) -> None:
    records = make_mme(data_root)
    # Drop the (right) answer to the second artwork/10002 question; add one whose prompt matches nothing.
    records = [r for r in records if "Dali" not in r["prompt"]]
    records.append(answer("artwork/images/10002.jpg", "yes", prompt="A question nobody asked?"))
    metrics = score("mme", data_root, records, tmp_path / "out")
    # artwork: 2/4 right, no image has both right -> 50 + 0
    assert metrics["tasks"]["artwork"] == pytest.approx(50.0)
    assert (metrics["missing"], metrics["unknown"]) == (1, 1)


def test_mme_answers_need_prompts(data_root: Path, tmp_path: Path) -> None:
    records = make_mme(data_root)
    del records[3]["prompt"]
    with pytest.raises(UserError, match=r"answers\.jsonl:4: answer has no field \"prompt\""):
        score("mme", data_root, records, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("E", "E"), ("F", "FAILED"),
    ("B.", "FAILED"),                 # needs ". " after the letter, so "B." alone fails
    ("B. The cat", "B"), ("b. the cat", "FAILED"),
    ("The answer is C.", "C"), ("The answer is C", "FAILED"),   # the regex needs one character after C
    ("The answer is A. The answer is B.", "FAILED"),            # two matches
    ("The answer is A. No, the answer is B.", "A"),             # case-sensitive: a single match
    ("The answer is Z.", "Z"),
])
def test_sqa_parse(text: str, letter: str) -> None:
    assert parse_sqa_letter(text) == letter


def test_sqa_letter_must_be_a_present_choice() -> None:
    assert predicted_choice_index("B", 2) == 1
    assert predicted_choice_index("C", 2) == -1
    assert predicted_choice_index("Z", 5) == -1
    assert predicted_choice_index("FAILED", 5) == -1


def test_sqa_hand_computed(data_root: Path, tmp_path: Path) -> None:
    metrics = score("sqa", data_root, make_sqa(data_root), tmp_path / "out")
    # right: 1 (B), 2 ("A. ..."), 3 ("The answer is C."); wrong: 4 (C of 2), 5 (missing), 6 ("B."), 7 (2 matches)
    assert metrics["accuracy"] == pytest.approx(100 * 3 / 7)
    # with image: 1, 3, 4, 5, 7 -> 2 right of 5 (the missing one stays in the denominator)
    assert metrics["img_accuracy"] == pytest.approx(40.0)
    assert (metrics["num_problems"], metrics["num_img_problems"]) == (7, 5)
    assert (metrics["missing"], metrics["unknown"]) == (1, 1)


# ---------------------------------------------------------------------------------------------------------
# TextVQA and the VQA normalisation
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, normalized", [
    ("Two", "2"), ("ten", "10"), ("none", "0"),                  # number words
    ("The cat", "cat"), ("an apple", "apple"), ("A", ""),         # articles
    ("Hello, world?", "hello world"),                             # "," and "?" dropped
    ("yes!", "yes"), ("t-shirt", "t shirt"), ("left - right", "left right"),  # punctuation by context
    ("3.5", "3.5"), ("end.", "end"), ("a.m.", "am"),              # periods not before a digit go
    ("dont", "don't"), ("isnt it", "isn't it"), ("It's red", "it 's red"),  # contractions, 's split
    ("$5 & 10%", "$5 & 10%"), ("12:30", "12:30"),                 # : $ % & kept
    ("  Multi\nline\tanswer ", "multi line answer"),
])
def test_vqa_normalization(raw: str, normalized: str) -> None:
    assert normalize_vqa_answer(raw) == normalized


def test_vqa_soft_accuracy_leave_one_out() -> None:
    two_of_ten = ["nike"] * 2 + ["puma"] * 8
    # Leaving out one of the 2 matches (2 subsets) leaves 1 match -> 1/3; the other 8 subsets keep 2 -> 2/3.
    assert soft_accuracy("Nike", two_of_ten) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert soft_accuracy("Nike", two_of_ten) == pytest.approx(0.6)
    assert soft_accuracy("puma", two_of_ten) == pytest.approx(1.0)
    three_of_ten = ["yes"] * 3 + ["no"] * 7
    assert soft_accuracy("yes", three_of_ten) == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
    assert soft_accuracy("maybe", three_of_ten) == 0.0


@pytest.mark.parametrize("prompt, question", [
    ("What is it?\nReference OCR token: A, B\nAnswer the question using a single word or phrase.", "what is it?"),
    ("Reference OCR token: A, B\nWhat is it?\nAnswer the question using a single word or phrase.", "what is it?"),
    ("What is it?\nAnswer the question using a single word or phrase.", "what is it?"),
    ("OCR tokens: a b Question: What is it? Short answer:", "what is it?"),
])
def test_textvqa_question_from_prompt(prompt: str, question: str) -> None:
    assert question_from_prompt(prompt) == question


def test_textvqa_hand_computed(data_root: Path, tmp_path: Path) -> None:
    metrics = score("textvqa", data_root, make_textvqa(data_root), tmp_path / "out")
    assert metrics["accuracy"] == pytest.approx(TEXTVQA_EXPECTED_ACCURACY)
    assert metrics["accuracy"] == pytest.approx(380 / 6)
    assert metrics["missing"] == 1


# ---------------------------------------------------------------------------------------------------------
# GQA
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ground_truth_at", ["gqa/data/testdev_balanced_questions.json",
                                             "gqa/testdev_balanced_questions.json"])
def test_gqa_hand_computed(data_root: Path, tmp_path: Path, ground_truth_at: str) -> None:
    metrics = score("gqa", data_root, make_gqa(data_root, ground_truth_at), tmp_path / "out")
    # balanced: 201 right, 202 right, 203 wrong ("red "), 204 wrong, 205 missing; 206 unbalanced
    assert metrics["accuracy"] == pytest.approx(40.0)
    assert metrics["binary"] == pytest.approx(50.0)
    assert metrics["open"] == pytest.approx(100 / 3)
    assert (metrics["num_binary"], metrics["num_open"], metrics["missing"]) == (2, 3, 1)


# ---------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------

OPTIONS = {"A": "red", "B": "blue", "C": "green"}


@pytest.mark.parametrize("prediction, letter", [
    ("B", "B"), (" B ", "B"), ("B.", "B"), ("B)", "B"), ("(B)", "B"), ("B. blue", "B"), ("(B) blue", "B"),
    ("B: blue", "B"), ("The answer is C.", "C"), ("Answer: A", "A"),
    ("blue", "B"), ("It is green.", "C"),            # option text, exactly one contained
    ("D", None), ("D. purple", None),               # not a present option
    ("red or blue", None), ("purple", None), ("", None),
    ("A red ball", "A"),                             # "A" is an article here: found by option text "red"
    ("B。", "B"), ("（B）", "B"),                    # full-width punctuation (MMBench-CN answers)
])
def test_mmbench_letter_extraction(prediction: str, letter: str | None) -> None:
    assert extract_option_letter(prediction, OPTIONS) == letter


def test_mmbench_circular_eval_and_submission(data_root: Path, tmp_path: Path) -> None:
    metrics = score("mmbench", data_root, make_mmbench(data_root), tmp_path / "out")
    # question 0: all 3 rotations right; question 1: its copy answered "dog" (= A, expected B) -> 1 of 2
    assert metrics["accuracy"] == pytest.approx(50.0)
    assert metrics["single_row_accuracy"] == pytest.approx(80.0)
    assert metrics["num_groups"] == 2
    assert metrics["category_accuracy"] == {"animal": 0.0, "color": 100.0}
    rows = read_xlsx_rows(tmp_path / "out/submission.xlsx")
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert rows[1] == [0, "What color is the ball?", "red", "blue", "green", None, "B", "B", "dev"]
    assert rows[4] == [1, "Which animal is shown?", "cat", "dog", None, "bird", "A", "A", "dev"]
    assert [row[0] for row in rows[1:]] == [0, 1_000_000, 2_000_000, 1, 1_000_001]


def read_xlsx_rows(path: Path) -> list[list]:
    """Read back our xlsx through its XML parts, checking the package structure Excel/openpyxl rely on."""
    namespace = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/_rels/workbook.xml.rels",
                "xl/worksheets/sheet1.xml"} <= names
        content_types = ET.fromstring(archive.read("[Content_Types].xml"))
        overrides = {o.get("PartName"): o.get("ContentType") for o in content_types}
        assert overrides["/xl/workbook.xml"].endswith("sheet.main+xml")
        assert overrides["/xl/worksheets/sheet1.xml"].endswith("worksheet+xml")
        package_rels = ET.fromstring(archive.read("_rels/.rels"))
        assert [r.get("Target") for r in package_rels] == ["xl/workbook.xml"]
        workbook = ET.fromstring(archive.read("xl/workbook.xml"))
        sheet = workbook.find("m:sheets/m:sheet", namespace)
        rel_id = sheet.get("{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id")
        workbook_rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
        assert {r.get("Id"): r.get("Target") for r in workbook_rels}[rel_id] == "worksheets/sheet1.xml"
        worksheet = ET.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    rows = []
    for row_number, row in enumerate(worksheet.find("m:sheetData", namespace), start=1):
        assert row.get("r") == str(row_number)
        values: dict[int, object] = {}
        for cell in row:
            reference = cell.get("r")
            assert reference.endswith(str(row_number))
            column = ord(reference[0]) - ord("A")
            if cell.get("t") == "inlineStr":
                values[column] = cell.find("m:is/m:t", namespace).text or ""
            else:
                values[column] = int(cell.find("m:v", namespace).text)
        rows.append([values.get(i) for i in range(max(values) + 1 if values else 0)])
    width = max(len(r) for r in rows)
    return [r + [None] * (width - len(r)) for r in rows]


def test_xlsx_escapes_text_and_names_columns(tmp_path: Path) -> None:
    from xmodelvlm.eval.scorers.xlsx import xlsx_bytes
    path = tmp_path / "x.xlsx"
    path.write_bytes(xlsx_bytes(["a", "b"], [["<tag> & \"q\"\x01", 3], [None, "  spaced  "]]))
    assert read_xlsx_rows(path) == [["a", "b"], ["<tag> & \"q\"", 3], [None, "  spaced  "]]
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]


def test_mmbench_test_split_writes_submission_without_accuracy(data_root: Path, tmp_path: Path) -> None:
    records = make_mmbench(data_root)
    path = data_root / "mmbench/mmbench_dev_20230712.tsv"
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    answer_column = lines[0].index("answer")
    (data_root / "mmbench/mmbench_test_20230712.tsv").write_text(
        "\n".join("\t".join(c for i, c in enumerate(line) if i != answer_column) for line in lines) + "\n")
    answers_path = write_jsonl(tmp_path / "answers.jsonl", records)
    metrics = get_benchmark("mmbench").score(data_root, answers_path, tmp_path / "out",
                                             question_file="mmbench_test_20230712.tsv")
    assert "accuracy" not in metrics
    assert read_xlsx_rows(tmp_path / "out/submission.xlsx")[0] == [
        "index", "question", "A", "B", "C", "D", "prediction", "split"]


# ---------------------------------------------------------------------------------------------------------
# VizWiz and MM-Vet submissions
# ---------------------------------------------------------------------------------------------------------

def test_vizwiz_upload_is_normalized_and_complete(data_root: Path, tmp_path: Path) -> None:
    metrics = score("vizwiz", data_root, make_vizwiz(data_root), tmp_path / "out")
    upload = json.loads((tmp_path / "out/answers_upload.json").read_text())
    assert upload == [{"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
                      {"image": "VizWiz_test_00000001.jpg", "answer": "2 dogs"},
                      {"image": "VizWiz_test_00000002.jpg", "answer": ""}]
    assert (metrics["num_answers"], metrics["missing"]) == (2, 1)


def test_mmvet_results_keep_text_unmodified(data_root: Path, tmp_path: Path) -> None:
    metrics = score("mmvet", data_root, make_mmvet(data_root), tmp_path / "out")
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results == {"v1_0": "The answer is 42", "v1_1": "", "v1_2": "Line one.\nLine two, kept as is. "}
    assert (metrics["num_answers"], metrics["failed"]) == (2, 1)


# ---------------------------------------------------------------------------------------------------------
# answers files: order, chunks, duplicates, unknown, malformed
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bench", ["pope", "mme", "sqa", "textvqa", "gqa", "mmbench"])
def test_order_and_chunking_do_not_change_scores(bench: str, data_root: Path, tmp_path: Path) -> None:
    records = MAKERS[bench](data_root)
    baseline = score(bench, data_root, records, tmp_path / "ordered")
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    chunks = [write_jsonl(tmp_path / f"chunk{i}.jsonl", shuffled[i::3]) for i in range(3)]
    chunked = get_benchmark(bench).score(data_root, chunks, tmp_path / "chunked")
    for key in ("submission",):
        baseline.pop(key, None), chunked.pop(key, None)
    if bench == "mmbench":
        assert read_xlsx_rows(tmp_path / "ordered/submission.xlsx") == read_xlsx_rows(
            tmp_path / "chunked/submission.xlsx")
    assert chunked == baseline


def test_duplicates_are_reported_and_the_last_answer_wins(data_root: Path, tmp_path: Path) -> None:
    records = make_gqa(data_root)
    first_203 = answer("203", "red")  # would be right, but a later answer for 203 replaces it
    metrics = score("gqa", data_root, [first_203] + records + [answer("999", "x")], tmp_path / "out")
    assert (metrics["duplicate"], metrics["unknown"], metrics["missing"]) == (1, 1, 1)
    assert metrics["accuracy"] == pytest.approx(40.0)
    warnings = coverage_warnings(metrics)
    assert any("1 answers repeat" in w for w in warnings) and any('"999"' in w for w in warnings)


def test_failed_answers_count_as_wrong(data_root: Path, tmp_path: Path) -> None:
    records = make_gqa(data_root)
    records[0]["metadata"] = {"error": "cannot load image"}  # 201 was right
    metrics = score("gqa", data_root, records, tmp_path / "out")
    assert metrics["accuracy"] == pytest.approx(20.0)
    assert metrics["failed"] == 1


def test_question_ids_match_with_their_json_type(data_root: Path, tmp_path: Path) -> None:
    records = make_mmbench(data_root)
    records[0]["question_id"] = "0"  # the TSV index is an integer
    metrics = score("mmbench", data_root, records, tmp_path / "out")
    assert (metrics["unknown"], metrics["missing"]) == (1, 1)


def test_identical_questions_share_their_answers(tmp_path: Path) -> None:
    from xmodelvlm.eval.questions import Question
    questions = [Question("img", "same?", None), Question("img", "same?", None), Question("img", "other?", None)]
    answers_path = write_jsonl(tmp_path / "a.jsonl", [answer("img", "x", prompt="same?"),
                                                      answer("img", "y", prompt="same?")])
    match = match_answers(questions, read_answers(answers_path))
    assert [a.text if a else None for a in match.answers] == ["x", "y", None]
    assert not match.duplicates


@pytest.mark.parametrize("line, fragment", [
    ("{not json", "not valid JSON"),
    ('{"text": "yes"}', 'no field "question_id"'),
    ('{"question_id": 1}', '"text"'),
    ('{"question_id": 1, "text": "yes", "metadata": []}', '"metadata"'),
    ('[1, 2]', "expected a JSON object"),
])
def test_malformed_answers_name_file_and_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 0, "text": "ok"}\n' + line + "\n")
    with pytest.raises(UserError) as error:
        read_answers(path)
    assert f"{path}:2" in str(error.value) and fragment in str(error.value)


# ---------------------------------------------------------------------------------------------------------
# eval/score.py
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Run `python eval/score.py` from the repo root twice, concurrently (each run pays the package import):
    a good POPE scoring and one with a missing answers file."""
    base = tmp_path_factory.mktemp("cli")
    data_root = base / "playground/data/eval"
    answers_path = write_jsonl(base / "answers.jsonl", make_pope(data_root))
    commands = {
        "ok": ["pope", "--data-root", str(data_root), "--answers", str(answers_path),
               "--output-dir", str(base / "ok")],
        "no_answers": ["pope", "--data-root", str(data_root), "--answers", str(base / "absent.jsonl"),
                       "--output-dir", str(base / "no_answers")],
    }
    processes = {name: subprocess.Popen([sys.executable, "eval/score.py", *args], cwd=REPO_ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, args in commands.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
                         base / name)
    return results


def test_score_cli_writes_metrics_and_prints_one_line(cli_runs) -> None:
    result, out = cli_runs["ok"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pope: F1 74.60 | acc 66.67 | yes 47.2%")
    assert "missing 1" in lines[0] and "failed 1" in lines[0]
    assert "warning: 1 questions have no answer" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["f1"] == pytest.approx((100 * 4 / 7 + 200 / 3 + 100) / 3)


def test_score_cli_missing_answers_file_exits_2_with_one_line(cli_runs) -> None:
    result, out = cli_runs["no_answers"]
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: answers file not found")
    assert "Traceback" not in result.stderr
    assert not (out / "metrics.json").exists()


def test_score_main_missing_ground_truth_is_one_line_exit_2(data_root: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    score_cli = load_score_script()
    answers_path = write_jsonl(tmp_path / "answers.jsonl", [answer("1", "yes")])
    argv = ["gqa", "--data-root", str(data_root), "--answers", str(answers_path), "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        score_cli.run_cli(score_cli.main, argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: gqa: missing") and stderr.count("\n") == 1
    assert "testdev_balanced_questions.json" in stderr


def test_score_main_unknown_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    score_cli = load_score_script()
    with pytest.raises(SystemExit) as exit_info:
        score_cli.run_cli(score_cli.main, ["pOpe", "--answers", "a.jsonl", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "unknown benchmark 'pOpe'; known benchmarks: gqa" in capsys.readouterr().err


def load_score_script():
    """Import eval/score.py in-process (it is a script, not a package module)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("xmodelvlm_eval_score_script", REPO_ROOT / "eval/score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
