"""Prompt profiles for multiple-choice questions.

The only module of `evaluation` that imports anything of this project: the HuatuoGPT2 prompt
format, used to build raw completion prompts in log-likelihood mode (chat mode sends messages
and lets the server apply its own template).

Profiles:
- `huatuo` (default): upstream HuatuoGPT-II's eval prompt
  "请回答下面选择题。\\n[{question_type}]{question}\\n{A. ...\\nB. ...}" (no bracket part when the
  question has no type).
- `cmb`: CMB's answer-only prompt, with optional few-shot examples (from a dev file) sent as
  earlier chat turns.
- `en`: MedQA style, in English.
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.data import Question
from huatuogpt2.prompt_format import generate_prompt  # the one import of ours (see module doc)

PROFILES = ("huatuo", "cmb", "en")

HUATUO_TEMPLATE = "请回答下面选择题。\n[{question_type}]{question}\n{option_str}"
HUATUO_TEMPLATE_UNTYPED = "请回答下面选择题。\n{question}\n{option_str}"
CMB_TEMPLATE = ("以下是中国{exam_type}中{exam_class}考试的一道{question_type}，"
                "不需要做任何分析和解释，直接输出答案选项。\n{question}\n{option_str}")
EN_TEMPLATE = ("Answer the following multiple-choice question about medicine. Think it through "
               "briefly, then give your final answer on the last line as \"Answer: X\".\n\n"
               "Question: {question}\n{option_str}\n\n{answer_instruction}")
EN_SINGLE = "Answer with the letter of the single best option."
EN_MULTI = "More than one option may be correct. Answer with all the correct letters."

# Log-likelihood mode: what the assistant's answer starts with, before the scored letter.
LOGLIK_LEAD_IN = {"huatuo": "答案：", "cmb": "答案：", "en": "Answer:"}
LOGLIK_LETTER_PREFIX = {"huatuo": "", "cmb": "", "en": " "}


def option_str(options: dict[str, str]) -> str:
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def user_text(q: Question, profile: str) -> str:
    if profile == "huatuo":
        template = HUATUO_TEMPLATE if q.question_type else HUATUO_TEMPLATE_UNTYPED
        return template.format(question_type=q.question_type, question=q.question,
                               option_str=option_str(q.options))
    if profile == "cmb":
        default_type = "多项选择题" if q.multi else "单项选择题"
        return CMB_TEMPLATE.format(
            exam_type=q.extra.get("exam_type", "医学"), exam_class=q.extra.get("exam_class", ""),
            question_type=q.question_type or default_type, question=q.question,
            option_str=option_str(q.options))
    if profile == "en":
        return EN_TEMPLATE.format(question=q.question, option_str=option_str(q.options),
                                  answer_instruction=EN_MULTI if q.multi else EN_SINGLE)
    raise ValueError(f"unknown profile {profile!r}")


@dataclass(frozen=True)
class FewShot:
    """Worked examples sent before the question as earlier chat turns (CMB protocol)."""

    examples: tuple[Question, ...] = ()

    def for_question(self, q: Question, k: int) -> list[Question]:
        """Up to k dev examples, from the same exam subject/class when the data says so."""
        if k <= 0 or not self.examples:
            return []
        key = q.extra.get("exam_subject") or q.extra.get("exam_class")
        same = [e for e in self.examples
                if key and (e.extra.get("exam_subject") or e.extra.get("exam_class")) == key]
        pool = same if same else list(self.examples)
        return [e for e in pool if e.id != q.id][:k]


def history(q: Question, profile: str, fewshot: FewShot, k: int) -> list[tuple[str, str]]:
    return [(user_text(e, profile), e.answer) for e in fewshot.for_question(q, k)]


def chat_messages(q: Question, profile: str, fewshot: FewShot = FewShot(),
                  k: int = 0) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for user, assistant in history(q, profile, fewshot, k):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": user_text(q, profile)})
    return messages


def loglik_prompt(q: Question, profile: str, fewshot: FewShot = FewShot(), k: int = 0) -> str:
    """The HuatuoGPT2 chat prompt of the question, then the answer lead-in."""
    return generate_prompt(user_text(q, profile), history(q, profile, fewshot, k)) \
        + LOGLIK_LEAD_IN[profile]


def loglik_continuation(letter: str, profile: str) -> str:
    return LOGLIK_LETTER_PREFIX[profile] + letter
