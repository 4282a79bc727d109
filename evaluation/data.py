"""Multiple-choice data sets: four file formats read into one `Question` type.

Formats (detected from the file's content, or named with `--format`):

- `huatuo`: upstream HuatuoGPT-II `eval_qa.json`, a dict {dataset name: [item, ...]} whose
  items have `question`, `option` {letter: text}, `answer` ("A" or "ACD"), optional
  `question_type`.
- `cmb`: CMB-Exam rows (`exam_type`, `exam_class`, `exam_subject`, `question`,
  `question_type` 单项选择题/多项选择题, `option` {A..E: text}, `answer` "ACD"), as a JSON list
  or JSONL.
- `cmexam`: the CMExam CSV files (columns `Question`, `Options` with one "A xxx" line per option,
  `Answer`, and annotations such as `Explanation`, `Disease Group`, `Clinical Department`,
  `Medical Discipline`, `Competency Area`, `Difficulty level`, `Question Type`).
- `medqa`: MedQA JSONL (`question`, `options` {letter: text}, `answer_idx`, optional
  `answer`, `meta_info`).

Options whose text is a single character are kept (CMB's own script drops them by mistake);
only empty options are dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("huatuo", "cmb", "cmexam", "medqa")
LETTERS = "ABCDEFGHIJ"

# CMExam annotation columns -> group names in results.json.
CMEXAM_GROUPS = {
    "Question Type": "question_type",
    "Disease Group": "disease_group",
    "Clinical Department": "clinical_department",
    "Medical Discipline": "medical_discipline",
    "Competency Area": "competency_area",
    "Difficulty level": "difficulty",
}
MULTI_TYPES = ("多项选择题", "多选题", "多选", "X型题", "multiple")


class DataError(ValueError):
    """A data file that cannot be read; the message is one line, for the user."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: dict[str, str]
    answer: str  # gold letters, unique and ascending
    question_type: str | None = None
    language: str = "zh"
    # grouping field -> value, e.g. {"dataset": "CMB", "exam_type": "医师考试"}
    groups: dict[str, str] = field(default_factory=dict)
    # the original row's extra fields a profile may need (exam_type, exam_class, ...)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def multi(self) -> bool:
        """A multiple-answer question: several gold letters, or a multi-answer type."""
        if len(self.answer) > 1:
            return True
        qt = (self.question_type or "").lower()
        return any(t.lower() in qt for t in MULTI_TYPES)


def normalize_answer(answer: object) -> str:
    letters = [c for c in str(answer).upper() if c in LETTERS]
    return "".join(sorted(set(letters)))


def _language(text: str) -> str:
    return "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en"


def _options(raw: object, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: options must be an object {{letter: text}}")
    out = {}
    for key, value in raw.items():
        text = "" if value is None else str(value).strip()
        if text:  # one-character options are kept; only empty ones are dropped
            out[str(key).strip().upper()] = text
    if not out:
        raise DataError(f"{where}: no options")
    return dict(sorted(out.items()))


def _stable_id(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:12]


def _record_list(path: Path) -> list:
    """The records of a JSON list, a single JSON object, or JSON lines."""
    data = _read_json_rows(path)
    return [data] if isinstance(data, dict) else data


def _read_json_rows(path: Path) -> object:
    text = path.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not JSON or JSONL ({exc.msg})") from None
    return rows


def detect_format(path: Path) -> str:
    """The format of a data file, from its content (and extension for CSV)."""
    if path.suffix.lower() in (".csv", ".tsv"):
        return "cmexam"
    data = _read_json_rows(path)
    if isinstance(data, dict):
        if data and all(isinstance(v, list) for v in data.values()):
            return "huatuo"
        data = [data]
    if isinstance(data, list) and data and isinstance(data[0], dict):
        row = data[0]
        if "answer_idx" in row or "options" in row:
            return "medqa"
        if "exam_type" in row or "exam_class" in row:
            return "cmb"
        if "option" in row:
            return "cmb"
    raise DataError(f"{path}: unknown data format; name it with --format ({', '.join(FORMATS)})")


def load(path: Path, fmt: str | None = None) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        questions = {"huatuo": _load_huatuo, "cmb": _load_cmb, "cmexam": _load_cmexam,
                     "medqa": _load_medqa}[fmt](path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a valid {fmt!r} file (missing or bad field {exc})") \
            from None
    if not questions:
        raise DataError(f"{path}: no questions")
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate question ids")
    return questions


def _load_huatuo(path: Path) -> list[Question]:
    data = _read_json_rows(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: the huatuo format is a JSON object {{dataset: [items]}}")
    out = []
    for dataset, items in data.items():
        for i, item in enumerate(items):
            if "option" not in item:
                continue  # upstream mixes in open questions; they are not multiple-choice
            where = f"{path}: {dataset}[{i}]"
            qtype = item.get("question_type") or None
            groups = {"dataset": str(dataset)}
            if qtype:
                groups["question_type"] = qtype
            out.append(Question(
                id=str(item.get("id", f"{dataset}-{i}")), question=str(item["question"]),
                options=_options(item["option"], where), answer=normalize_answer(item["answer"]),
                question_type=qtype, language=_language(item["question"]), groups=groups))
    return out


def _load_cmb(path: Path) -> list[Question]:
    data = _record_list(path)
    out = []
    for i, row in enumerate(data):
        where = f"{path}: row {i + 1}"
        qtype = row.get("question_type") or None
        extra = {k: str(row[k]) for k in ("exam_type", "exam_class", "exam_subject")
                 if row.get(k)}
        groups = dict(extra)
        if qtype:
            groups["question_type"] = qtype
        qid = row.get("id")
        if qid is None:
            options_json = json.dumps(row["option"], ensure_ascii=False)
            qid = f"{i}-{_stable_id(row['question'], options_json)}"
        out.append(Question(
            id=str(qid), question=str(row["question"]), options=_options(row["option"], where),
            answer=normalize_answer(row.get("answer", "")), question_type=qtype,
            language=_language(row["question"]), groups=groups, extra=extra))
    return out


_OPTION_LINE = re.compile(r"^\s*([A-J])\s*[.．、:：)）]?\s*(.*)$")


def parse_cmexam_options(text: str) -> dict[str, str]:
    """CMExam's `Options` cell: one option a line, "A xxx" (also "A. xxx", "A、xxx")."""
    options: dict[str, str] = {}
    for line in str(text).splitlines():
        m = _OPTION_LINE.match(line)
        if m and m.group(1) not in options:
            options[m.group(1)] = m.group(2).strip()
        elif options and line.strip():  # a wrapped line continues the previous option
            last = list(options)[-1]
            options[last] = (options[last] + " " + line.strip()).strip()
    return options


def _load_cmexam(path: Path) -> list[Question]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        rows = list(reader)
    if rows and not {"Question", "Options", "Answer"} <= set(rows[0]):
        raise DataError(f"{path}: a CMExam CSV needs the columns Question, Options, Answer")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 2}"
        groups = {name: row[col].strip() for col, name in CMEXAM_GROUPS.items()
                  if (row.get(col) or "").strip()}
        question = row["Question"].strip()
        out.append(Question(
            id=str(row.get("id") or f"{i}-{_stable_id(question, row['Options'])}"),
            question=question, options=_options(parse_cmexam_options(row["Options"]), where),
            answer=normalize_answer(row["Answer"]),
            question_type=groups.get("question_type"), language=_language(question),
            groups=groups))
    return out


def _load_medqa(path: Path) -> list[Question]:
    data = _record_list(path)
    out = []
    for i, row in enumerate(data):
        where = f"{path}: row {i + 1}"
        groups = {}
        if row.get("meta_info"):
            groups["meta_info"] = str(row["meta_info"])
        gold = row.get("answer_idx")
        if gold is None:  # only the answer text: find its letter
            gold = next(k for k, v in row["options"].items() if v == row["answer"])
        out.append(Question(
            id=str(row.get("id", i)), question=str(row["question"]),
            options=_options(row["options"], where), answer=normalize_answer(gold),
            question_type=row.get("question_type") or None, language=_language(row["question"]),
            groups=groups))
    return out
