"""Data formats: each is read into the same questions, and detected from the content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import data, prompts

SAMPLES = Path(__file__).resolve().parents[2] / "evaluation" / "data"


@pytest.mark.parametrize("name, fmt, n", [
    ("sample_huatuo_eval_qa.json", "huatuo", 14),
    ("sample_cmb.jsonl", "cmb", 14),
    ("sample_cmb_dev.json", "cmb", 4),
    ("sample_cmexam.csv", "cmexam", 12),
    ("sample_medqa.jsonl", "medqa", 12),
])
def test_bundled_samples_detected_and_loaded(name, fmt, n):
    path = SAMPLES / name
    assert data.detect_format(path) == fmt
    questions = data.load(path)
    assert len(questions) == n
    assert len({q.id for q in questions}) == n
    for q in questions:
        assert q.answer and set(q.answer) <= set(q.options)
        assert q.answer == "".join(sorted(q.answer))


def test_huatuo_format(tmp_path):
    path = tmp_path / "eval_qa.json"
    path.write_text(json.dumps({
        "ds1": [{"question": "Q1", "option": {"A": "x", "B": "是", "C": ""}, "answer": "B",
                 "question_type": "最佳选择题"},
                {"query": "an open question without options"}],
        "ds2": [{"question": "Q2", "option": {"A": "a1", "B": "b1"}, "answer": "AB"}],
    }, ensure_ascii=False))
    qs = data.load(path)
    assert [q.id for q in qs] == ["ds1-0", "ds2-0"]
    assert qs[0].options == {"A": "x", "B": "是"}  # one character kept, empty dropped
    assert qs[0].groups == {"dataset": "ds1", "question_type": "最佳选择题"}
    assert qs[1].groups == {"dataset": "ds2"} and qs[1].multi
    assert prompts.user_text(qs[0], "huatuo") == "请回答下面选择题。\n[最佳选择题]Q1\nA. x\nB. 是"
    assert prompts.user_text(qs[1], "huatuo") == "请回答下面选择题。\nQ2\nA. a1\nB. b1"


def test_cmb_format_list_and_jsonl(tmp_path):
    row = {"exam_type": "医师考试", "exam_class": "执业医师", "exam_subject": "内科学",
           "question": "Q", "question_type": "多项选择题",
           "option": {"A": "甲", "B": "乙乙", "C": "丙", "D": "", "E": "戊"}, "answer": "ACE"}
    as_list = tmp_path / "cmb.json"
    as_list.write_text(json.dumps([row], ensure_ascii=False))
    as_lines = tmp_path / "cmb.jsonl"
    as_lines.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps(
        {**row, "question": "Q2", "question_type": "单项选择题", "answer": "B"},
        ensure_ascii=False) + "\n")
    for path in (as_list, as_lines):
        assert data.detect_format(path) == "cmb"
    q = data.load(as_lines)[0]
    assert q.options == {"A": "甲", "B": "乙乙", "C": "丙", "E": "戊"}  # CMB's script drops 甲
    assert q.answer == "ACE" and q.multi
    assert q.groups == {"exam_type": "医师考试", "exam_class": "执业医师",
                        "exam_subject": "内科学", "question_type": "多项选择题"}
    assert prompts.user_text(q, "cmb") == (
        "以下是中国医师考试中执业医师考试的一道多项选择题，不需要做任何分析和解释，直接输出答案选项。"
        "\nQ\nA. 甲\nB. 乙乙\nC. 丙\nE. 戊")
    assert not data.load(as_lines)[1].multi


def test_cmexam_csv(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(
        "Question,Options,Answer,Explanation,Disease Group,Clinical Department,"
        "Medical Discipline,Competency Area,Difficulty level,Question Type\n"
        '问题一,"A 甲\nB 乙乙\nC. 丙\nD、丁",C,解释,传染病,感染科,临床医学,医学知识,1,A1型题\n'
        '问题二,"A x\nB y",AB,,,,,,,X型题\n', encoding="utf-8")
    assert data.detect_format(path) == "cmexam"
    q1, q2 = data.load(path)
    assert q1.options == {"A": "甲", "B": "乙乙", "C": "丙", "D": "丁"}
    assert q1.answer == "C" and not q1.multi
    assert q1.groups == {"question_type": "A1型题", "disease_group": "传染病",
                         "clinical_department": "感染科", "medical_discipline": "临床医学",
                         "competency_area": "医学知识", "difficulty": "1"}
    assert q2.multi and q2.groups == {"question_type": "X型题"}


def test_medqa_jsonl(tmp_path):
    path = tmp_path / "medqa.jsonl"
    rows = [{"question": "Which?", "options": {"A": "one", "B": "two"}, "answer_idx": "B",
             "answer": "two", "meta_info": "step1"},
            {"question": "Other?", "options": {"A": "x", "B": "y"}, "answer": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert data.detect_format(path) == "medqa"
    q1, q2 = data.load(path)
    assert (q1.answer, q1.groups, q1.language) == ("B", {"meta_info": "step1"}, "en")
    assert q2.answer == "A"  # found from the answer text
    text = prompts.user_text(q1, "en")
    assert text.startswith("Answer the following multiple-choice question")
    assert "A. one\nB. two" in text and text.endswith("Answer with the letter of the single "
                                                      "best option.")


def test_unknown_and_missing(tmp_path):
    weird = tmp_path / "weird.json"
    weird.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(data.DataError, match="unknown data format"):
        data.load(weird)
    with pytest.raises(data.DataError, match="not found"):
        data.load(tmp_path / "nope.json")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": 1}\n{oops\n')
    with pytest.raises(data.DataError, match="not JSON"):
        data.load(broken)
    with pytest.raises(data.DataError, match="not a valid 'medqa'"):
        data.load(weird, "medqa")


def test_fewshot_as_chat_turns():
    qs = data.load(SAMPLES / "sample_cmb.jsonl")
    dev = prompts.FewShot(tuple(data.load(SAMPLES / "sample_cmb_dev.json")))
    messages = prompts.chat_messages(qs[0], "cmb", dev, 2)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # one 内科学 example
    assert messages[1]["content"] == "C"
    text = prompts.loglik_prompt(qs[0], "cmb", dev, 2)
    assert text.startswith("<问>：以下是中国医师考试") and text.endswith("\n<答>：答案：")
    assert text.count("<问>：") == 2
