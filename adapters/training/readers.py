"""Readers for the training data formats, all turned into `Sample`s (question/answer rounds).

Formats (`--format` / the `format` key of a data source):
- `conversations`: HuatuoGPT2's schema (`HuatuoGPT2-SFT-GPT4-140K`, the pretraining-instruction
  files): a JSON list or JSONL of `{"id", "conversations": [{"from": "human"|"gpt", "value"}]}`,
  strictly alternating human/gpt, starting with human and ending with gpt.
- `upstream`: upstream's training dict `{source_name: [[q, a, q, a, ...], ...]}`; each key
  becomes its own source.
- `sharegpt`: general chat data, ShareGPT style (`conversations` with `from` in
  human/user/gpt/chatgpt/assistant/system) or OpenAI style (`messages` with `role`/`content`).
  A leading assistant turn is dropped and system text is merged in front of the first question,
  as the server's prompt module does.
- `passages`: raw text for `huatuo unify`: JSONL/JSON list of `{"id", "text"}` or strings, or a
  `.txt` file with passages separated by blank lines.

A malformed record raises `DataError` naming file, record and field; with `skip_invalid` it is
skipped and counted instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from huatuogpt2.prompt_format import SYSTEM_SEPARATOR

logger = logging.getLogger(__name__)

FORMATS = ("conversations", "upstream", "sharegpt", "passages")


class DataError(ValueError):
    """A malformed record: `path`, `record` (index or id) and `field` say where."""

    def __init__(self, path: Path | str, record: int | str | None, field_name: str | None,
                 problem: str) -> None:
        where = f"{path}"
        if record is not None:
            where += f", record {record}"
        if field_name:
            where += f", field '{field_name}'"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.record = record
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True)
class Sample:
    """One training conversation: (question, answer) rounds, all answered."""

    id: str
    source: str
    rounds: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Passage:
    id: str
    text: str


@dataclass
class ReadResult:
    samples: list = field(default_factory=list)
    skipped: int = 0
    # First few skip reasons, for the log.
    problems: list[str] = field(default_factory=list)


def _load_records(path: Path) -> Iterator[tuple[int, object]]:
    """(record index, parsed object) from a JSON list or JSONL file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, None, None, f"invalid JSON ({exc})") from exc
        yield from enumerate(data)
        return
    for index, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            yield index, json.loads(line)
        except json.JSONDecodeError as exc:
            # One bad line is a bad record, not a bad file: it can be skipped.
            yield index, DataError(path, index, None, f"invalid JSON line ({exc.msg})")


def _text(value: object, path: Path, record: int | str, field_name: str) -> str:
    if not isinstance(value, str):
        raise DataError(path, record, field_name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(path, record, field_name, "is empty")
    return value


def _record_id(obj: dict, index: int) -> str:
    value = obj.get("id")
    return str(value) if value is not None else str(index)


HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
SYSTEM_ROLES = {"system"}


def parse_conversations_record(obj: object, path: Path, index: int, source: str) -> Sample:
    """The strict HuatuoGPT2 schema."""
    if not isinstance(obj, dict):
        raise DataError(path, index, None, f"must be an object, got {type(obj).__name__}")
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        raise DataError(path, index, "conversations", "missing or not a list")
    if len(turns) < 2 or len(turns) % 2:
        raise DataError(path, index, "conversations",
                        f"needs an even number (>= 2) of turns, got {len(turns)}")
    texts: list[str] = []
    for t, turn in enumerate(turns):
        name = f"conversations[{t}]"
        if not isinstance(turn, dict):
            raise DataError(path, index, name, "must be an object")
        expected = "human" if t % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            raise DataError(path, index, f"{name}.from",
                            f"expected {expected!r}, got {turn.get('from')!r}")
        texts.append(_text(turn.get("value"), path, index, f"{name}.value"))
    rounds = tuple(zip(texts[0::2], texts[1::2], strict=True))
    return Sample(_record_id(obj, index), source, rounds)


def parse_sharegpt_record(obj: object, path: Path, index: int, source: str) -> Sample:
    """ShareGPT (`conversations`/`from`/`value`) or OpenAI (`messages`/`role`/`content`)."""
    if not isinstance(obj, dict):
        raise DataError(path, index, None, f"must be an object, got {type(obj).__name__}")
    if "conversations" in obj:
        key, role_key, text_key = "conversations", "from", "value"
    elif "messages" in obj:
        key, role_key, text_key = "messages", "role", "content"
    else:
        raise DataError(path, index, "conversations", "missing (nor is there 'messages')")
    turns = obj[key]
    if not isinstance(turns, list):
        raise DataError(path, index, key, "must be a list")
    system_parts: list[str] = []
    roles: list[str] = []
    texts: list[str] = []
    for t, turn in enumerate(turns):
        name = f"{key}[{t}]"
        if not isinstance(turn, dict):
            raise DataError(path, index, name, "must be an object")
        role = turn.get(role_key)
        text = _text(turn.get(text_key), path, index, f"{name}.{text_key}")
        if role in SYSTEM_ROLES:
            if roles:
                raise DataError(path, index, f"{name}.{role_key}",
                                "a system turn must come before the conversation")
            system_parts.append(text)
        elif role in HUMAN_ROLES or role in ASSISTANT_ROLES:
            kind = "user" if role in HUMAN_ROLES else "assistant"
            if not roles and kind == "assistant":
                continue  # ShareGPT dumps often open with the bot's greeting: no question to it.
            if roles and roles[-1] == kind:
                raise DataError(path, index, f"{name}.{role_key}",
                                f"two {kind} turns in a row; turns must alternate")
            roles.append(kind)
            texts.append(text)
        else:
            raise DataError(path, index, f"{name}.{role_key}", f"unknown role {role!r}")
    if roles and roles[-1] == "user":
        roles.pop()
        texts.pop()  # An unanswered last question teaches nothing.
    if not roles:
        raise DataError(path, index, key, "no answered question")
    if system_parts:
        # Same merge as huatuogpt2.prompt_format.render (policy "merge").
        texts[0] = SYSTEM_SEPARATOR.join(system_parts) + SYSTEM_SEPARATOR + texts[0]
    rounds = tuple(zip(texts[0::2], texts[1::2], strict=True))
    return Sample(_record_id(obj, index), source, rounds)


def parse_upstream_pairs(obj: object, path: Path, record: str, source: str) -> Sample:
    if not isinstance(obj, list):
        raise DataError(path, record, None, f"must be a list [q, a, ...], got {type(obj).__name__}")
    if len(obj) < 2 or len(obj) % 2:
        raise DataError(path, record, None,
                        f"needs an even number (>= 2) of texts [q, a, ...], got {len(obj)}")
    texts = [_text(v, path, record, f"[{i}]") for i, v in enumerate(obj)]
    return Sample(record, source, tuple(zip(texts[0::2], texts[1::2], strict=True)))


def read_samples(path: Path, fmt: str, source: str | None = None,
                 skip_invalid: bool = False) -> ReadResult:
    """Read conversations/upstream/sharegpt data. `source` defaults to the file's stem."""
    path = Path(path)
    if fmt not in FORMATS or fmt == "passages":
        raise ValueError(f"not a sample format: {fmt!r} (one of conversations, upstream, sharegpt)")
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    result = ReadResult()

    def take(make) -> None:
        try:
            result.samples.append(make())
        except DataError as exc:
            if not skip_invalid:
                raise
            result.skipped += 1
            if len(result.problems) < 5:
                result.problems.append(str(exc))

    if fmt == "upstream":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(path, None, None, f"invalid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError(path, None, None, "must be a JSON object {source: [[q, a, ...]]}")
        for name, items in data.items():
            if not isinstance(items, list):
                raise DataError(path, None, name, "must be a list of [q, a, ...] lists")
            for i, item in enumerate(items):
                take(lambda item=item, i=i, name=name: parse_upstream_pairs(
                    item, path, f"{name}[{i}]", name))
        return result

    name = source or path.stem
    parse = parse_conversations_record if fmt == "conversations" else parse_sharegpt_record
    for index, obj in _load_records(path):
        def make(obj=obj, index=index) -> Sample:
            if isinstance(obj, DataError):
                raise obj
            return parse(obj, path, index, name)

        take(make)
    return result


def read_passages(path: Path, skip_invalid: bool = False) -> tuple[list[Passage], int]:
    """Passages for unification, with the number of skipped records."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    if path.suffix == ".txt":
        blocks = path.read_text(encoding="utf-8").split("\n\n")
        texts = [b.strip() for b in blocks if b.strip()]
        return [Passage(str(i), t) for i, t in enumerate(texts)], 0
    passages: list[Passage] = []
    skipped = 0
    seen: set[str] = set()
    for index, obj in _load_records(path):
        try:
            if isinstance(obj, DataError):
                raise obj
            if isinstance(obj, str):
                passage = Passage(str(index), _text(obj, path, index, None))
            elif isinstance(obj, dict):
                passage = Passage(_record_id(obj, index),
                                  _text(obj.get("text"), path, index, "text"))
            else:
                raise DataError(path, index, None, "must be a string or {\"id\", \"text\"}")
            if passage.id in seen:
                raise DataError(path, index, "id", f"duplicate id {passage.id!r}")
            seen.add(passage.id)
            passages.append(passage)
        except DataError:
            if not skip_invalid:
                raise
            skipped += 1
    return passages, skipped
