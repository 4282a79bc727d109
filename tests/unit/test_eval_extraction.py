"""Answer extraction and scoring on literal model outputs, including the traps."""

from __future__ import annotations

import pytest

from evaluation import extract
from evaluation.data import Question
from evaluation.mcq import Job, score_job
from evaluation.report import summarize

OPTS = {"A": "阿莫西林", "B": "红霉素", "C": "庆大霉素", "D": "左氧氟沙星", "E": "多西环素"}
ONE_CHAR = {"A": "胃", "B": "肝", "C": "肾", "D": "心", "E": "肺"}


@pytest.mark.parametrize("text, letters, method", [
    ("答案是：A", "A", "phrase"),
    ("答案是A。", "A", "phrase"),
    ("分析如下……所以答案为C。其余选项A、B均不对", "C", "phrase"),
    ("正确答案：B", "B", "phrase"),
    ("答案：ACD。", "ACD", "phrase"),
    ("答案是C，A不对", "C", "phrase"),  # upstream's ascending rule drops the later A
    ("The answer is (C).", "C", "phrase"),
    ("Answer: D", "D", "phrase"),
    ("Let me think. Final answer: B. Pneumonia is common.", "B", "phrase"),
    ("首选药物是红霉素，因为……", "B", "option_text"),
    ("应选阿莫西林和庆大霉素", "AC", "option_text"),
    ("我选 D", "D", "letters"),
    ("Based on the findings, C is best", "C", "letters"),
    ("选AC", "AC", "letters"),
])
def test_extracts(text, letters, method):
    assert extract.extract(text, OPTS) == extract.Extraction(letters, method)


@pytest.mark.parametrize("text", [
    "Based on these symptoms I cannot decide.",  # the B of "Based" touches Latin letters
    "I am not sure about this one.",
    "",
    "这个问题需要更多信息。",
    "Definitely a tough Case.",  # D, C, E inside words
    "Take vitaminE and proteinC daily.",  # capitals touching a Latin letter on the left
])
def test_unextractable(text):
    assert extract.extract(text, OPTS) == extract.Extraction("", "none")


def test_descending_option_texts_not_accepted_then_letters():
    # option texts in descending order are rejected; no standalone letters -> nothing
    assert extract.extract("先排除庆大霉素，再看阿莫西林", OPTS).letters == ""


def test_one_character_options_not_matched_as_text_but_kept():
    # "心" appears in the text but one-character options are not searched for
    out = "患者心情不好，建议观察。"
    assert extract.extract(out, ONE_CHAR).letters == ""
    # upstream searches every option text, one character ones included
    assert extract.extract_upstream(out, ONE_CHAR) == "D"


def test_single_answer_takes_first_letter_multi_needs_exact_set():
    assert extract.prediction("AC", multi=False) == "A"
    assert extract.is_correct("A", "A", multi=False)
    assert extract.prediction("AC", multi=True) == "AC"
    assert not extract.is_correct("AC", "ACD", multi=True)
    assert not extract.is_correct("ACDE", "ACD", multi=True)
    assert extract.is_correct("ACD", "ACD", multi=True)
    assert not extract.is_correct("", "A", multi=False)


def test_upstream_default_b():
    assert extract.score_upstream("I don't know.", OPTS, "B") == ("B", True)
    assert extract.score_upstream("I don't know.", OPTS, "A") == ("B", False)
    # upstream reads any A-E capital inside its phrase, even inside a word
    assert extract.extract_upstream("答案是Based on", OPTS) == "B"
    assert extract.extract("答案是Based on", OPTS).letters == ""


def _q(qid, answer, options=OPTS, qtype=None, groups=None):
    return Question(qid, "问题", options, answer, qtype, groups=groups or {"dataset": "x"})


def test_unextractable_is_wrong_and_counted_but_upstream_guesses_b():
    jobs = [Job(_q("1", "B"), [], "k1"), Job(_q("2", "A"), [], "k2"), Job(_q("3", "C"), [], "k3")]
    outputs = {"k1": "I cannot tell.", "k2": "答案是A", "k3": "Based on nothing."}
    rows = [score_job(j, {"output": outputs[j.key]}, "generate") for j in jobs]
    assert [r["correct"] for r in rows] == [False, True, False]
    assert [r["extraction_failed"] for r in rows] == [True, False, True]
    assert [r["upstream_correct"] for r in rows] == [True, True, False]
    overall = summarize(rows, "generate")["overall"]
    assert overall["n"] == 3 and overall["correct"] == 1
    assert overall["extraction_failures"] == 2
    assert overall["accuracy"] == pytest.approx(1 / 3)
    assert overall["accuracy_upstream"] == pytest.approx(2 / 3)


def test_multi_answer_question_scored_on_exact_set():
    q = _q("m", "ACD", qtype="多项选择题")
    assert q.multi
    assert score_job(Job(q, [], "k"), {"output": "答案是ACD"}, "generate")["correct"]
    assert not score_job(Job(q, [], "k"), {"output": "答案是AC"}, "generate")["correct"]
    # a multi-answer type with a single gold letter is still a multi-answer question
    q1 = _q("m1", "A", qtype="多项选择题")
    assert not score_job(Job(q1, [], "k"), {"output": "答案是AC"}, "generate")["correct"]


def test_groups_counted():
    jobs = [Job(_q("1", "A", groups={"dataset": "d1", "question_type": "t"}), [], "a"),
            Job(_q("2", "A", groups={"dataset": "d2"}), [], "b")]
    rows = [score_job(jobs[0], {"output": "答案是A"}, "generate"),
            score_job(jobs[1], {"output": "答案是B"}, "generate")]
    groups = summarize(rows, "generate")["groups"]
    assert groups["dataset"]["d1"]["accuracy"] == 1.0
    assert groups["dataset"]["d2"]["accuracy"] == 0.0
    assert groups["question_type"]["t"]["n"] == 1
