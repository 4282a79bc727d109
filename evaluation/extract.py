"""Answer extraction from free-text model outputs, and scoring.

`extract` is strict: it follows upstream HuatuoGPT-II's order (an explicit answer phrase, then
option texts found in the output, then a standalone run of letters) but never guesses. An
output it cannot read is scored WRONG and counted as an extraction failure.

`extract_upstream` / `score_upstream` reproduce upstream's scorer (`match_choice3` in
HuatuoGPT-II's evaluation/scorer.py, as used by its eval_qa.py) exactly, including its
default prediction "B" when nothing is found, so `accuracy_upstream` is comparable with
published numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPTION_LETTERS = "ABCDE"

# (1) explicit answer phrases. Chinese: 答案是/答案为/答案：/正确答案… up to 。 or the end.
_ZH_PHRASE = re.compile(r"答案\s*(?:应该|应|是|为|：|:)+(.*?)(?:。|$)", re.S)
# English: "answer is (C)", "Answer: C", "the correct answer is option B".
_EN_PHRASE = re.compile(r"\banswers?\s*(?:is|are|:)\s*(?:option\s*)?(.*?)(?:\.(?!\w)|\n|$)",
                        re.I | re.S)
# (3) a standalone run of letters: not touching a Latin letter on either side.
_RUN = re.compile(r"(?<![A-Za-z])[A-E]+(?![A-Za-z])")


@dataclass(frozen=True)
class Extraction:
    letters: str  # "" when nothing could be extracted
    method: str  # "phrase" | "option_text" | "letters" | "none"


def _ascending_unique(letters: str) -> str:
    """Upstream's rule: keep a letter if new and not before the last one kept."""
    out = ""
    last = -1
    for x in letters:
        if x not in OPTION_LETTERS:
            continue
        i = OPTION_LETTERS.index(x)
        if x in out or i < last:
            continue
        out += x
        last = i
    return out


def _phrase(text: str) -> str:
    for pattern in (_ZH_PHRASE, _EN_PHRASE):
        for m in pattern.finditer(text):
            runs = "".join(_RUN.findall(m.group(1)))
            letters = _ascending_unique(runs)
            if letters:
                return letters
    return ""


def _option_text(text: str, options: dict[str, str]) -> str:
    # Option texts shorter than two characters are not searched for: a one-character option
    # such as "是" would match almost any output. (They are still shown and scored.)
    found = [(k, text.find(v)) for k, v in options.items()
             if len(v) >= 2 and k in OPTION_LETTERS and v in text]
    found.sort(key=lambda kv: kv[1])
    keys = "".join(k for k, _ in found)
    if keys and keys == "".join(sorted(keys)):
        return keys
    return ""


def _letter_run(text: str) -> str:
    for run in _RUN.findall(text):
        if len(run) == len(set(run)) and run == "".join(sorted(run)):
            return run
    return ""


def extract(text: str, options: dict[str, str]) -> Extraction:
    text = text or ""
    for method, fn in (("phrase", lambda: _phrase(text)),
                       ("option_text", lambda: _option_text(text, options)),
                       ("letters", lambda: _letter_run(text))):
        letters = fn()
        if letters:
            return Extraction(letters, method)
    return Extraction("", "none")


def prediction(letters: str, multi: bool) -> str:
    """The answer a question is scored on: the first letter of a single-answer question."""
    if not letters:
        return ""
    return letters if multi else letters[0]


def is_correct(pred: str, gold: str, multi: bool) -> bool:
    if not pred:
        return False
    if multi:
        return set(pred) == set(gold)
    return pred[0] == gold


# --- upstream's scorer, reproduced as is --------------------------------------------------

_UP_PHRASE = re.compile(r"答案(?:是|为)(.*?)(。|$)", re.S)
_UP_RUN = re.compile(r"(?<![A-Za-z])[A-E]+(?![A-Za-z])")


def extract_upstream(text: str, options: dict[str, str]) -> str:
    """HuatuoGPT-II's match_choice3; "" when nothing matched."""
    res = _UP_PHRASE.search(text)
    if res:
        ans = _ascending_unique("".join(x for x in res.group(1) if x in OPTION_LETTERS))
        if ans:
            return ans
    found = [(k, text.find(v)) for k, v in options.items() if v in text and len(v) > 0]
    ans = ""
    if found:
        found.sort(key=lambda x: x[1])
        ans = "".join(x[0] for x in found)
    if not ans or ans != "".join(sorted(ans)):
        for ma in _UP_RUN.findall(text):
            if len(ma) == len(set(ma)) and ma == "".join(sorted(ma)):
                return ma
        return ans
    return ans


def score_upstream(text: str, options: dict[str, str], gold: str) -> tuple[str, bool]:
    """Upstream's prediction (default "B"; first letter when the gold has one) and verdict."""
    pred = extract_upstream(text or "", options)
    if len(pred) < 1:
        pred = "B"
    if len(gold) == 1:
        pred = pred[0]
    return pred, pred == gold
