"""Data unification (upstream `adaption/data_unification/rewrite.py`), asynchronous.

An LLM behind any OpenAI-compatible endpoint rewrites each corpus passage into a (question,
answer) pair: the question from the passage's first 400 characters, the answer from the question
plus the first 600 characters. Upstream's filters: a question over 180 characters, or an answer
that mentions `参考` ("reference"), is rejected and asked again (2 tries each); a passage still
failing is recorded as dropped.

Failures that are not the passage's fault are not recorded as dropped, so a rerun tries the
passage again: requests still failing after the retries, and a prompt longer than the server's
context (HTTP 400 `context_length_exceeded`: the server's --max-model-len is too small, counted
in `UnifyStats.context_exceeded`). A rejected API key or an unknown model (HTTP 401/403/404)
stops the whole run (`UnifyStats.fatal`): every other request would fail the same way.

Resumable: results are appended to a JSONL file (HuatuoGPT2 `conversations` schema, readable by
`huatuo train`) and flushed line by line; dropped passages go to `<output>.dropped.jsonl`. A rerun
skips every id found in either file, and repairs a last line cut by a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adapters.training.readers import Passage

logger = logging.getLogger(__name__)

# Upstream's prompts, verbatim except that the target language is a parameter.
QUESTION_PROMPT = (
    "Please create a <question> that closely aligns with the provided <text>. Ensure that the "
    "<question> is formulated in {language} and does not explicitly reference the text. You may "
    "incorporate specific scenarios or contexts in the <question>, allowing the <text> to serve "
    "as a comprehensive and precise answer.\n\n<text>: {text}\n\n<question>: "
)
ANSWER_PROMPT = (
    "You are HuatuoGPT-II, equipped with in-depth knowledge in medicine. Your task is to directly "
    "answer the user's <question> in {language}. In formulating your response, you must "
    "thoughtfully reference the <reference text>, ensuring that your reply does not disclose your "
    "reliance on <reference text>. Aim to provide a comprehensive and informative response, "
    "incorporating relevant insights from <reference text> to best assist the user. Please be "
    "cautious to avoid including any content that might raise ethical concerns.\n\n"
    "<question>: {question}\n\n<reference text>: {text}\n\n<reply>: "
)


@dataclass
class UnifyOptions:
    model: str
    concurrency: int = 8
    max_retries: int = 5
    backoff_s: float = 1.0
    question_chars: int = 400
    answer_chars: int = 600
    max_question_chars: int = 180
    banned_answer_words: tuple[str, ...] = ("参考",)
    question_tries: int = 2
    answer_tries: int = 2
    language: str = "Chinese"
    question_prompt: str = QUESTION_PROMPT
    answer_prompt: str = ANSWER_PROMPT
    temperature: float | None = None
    question_max_tokens: int | None = None
    answer_max_tokens: int | None = None
    source: str = "unified"
    retry_dropped: bool = False


@dataclass
class UnifyStats:
    total: int = 0
    already_done: int = 0
    written: int = 0
    dropped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    # Passages of the input found in the output after the run (earlier runs included).
    kept: int = 0
    drop_reasons: Counter = field(default_factory=Counter)
    fail_reasons: Counter = field(default_factory=Counter)
    # Requests refused with HTTP 400 context_length_exceeded (counted in failed too).
    context_exceeded: int = 0
    context_message: str = ""
    # Set when the run stopped early: the endpoint refused the key or the model.
    fatal: str = ""

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.total if self.total else 1.0


class Dropped(Exception):
    """The passage cannot be unified (filters, or a request the server refuses): recorded."""


class ContextLengthExceeded(Exception):
    """The prompt does not fit the server's context: not recorded, a rerun tries again."""


class EndpointRefused(Exception):
    """The endpoint refuses the API key or the model (401/403/404): the run stops."""


def is_context_length_error(exc: Exception) -> bool:
    import openai

    if not isinstance(exc, openai.BadRequestError):
        return False
    text = f"{getattr(exc, 'code', '')} {exc.message}".lower()
    return "context_length_exceeded" in text or "context length" in text


# --- resumable JSONL ---------------------------------------------------------------------------

def repair_jsonl(path: Path) -> set[str]:
    """Ids in a JSONL file; a last line cut by a crash is removed so appends stay valid."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    ids: set[str] = set()
    good_end = 0
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline == -1:
            break  # no newline: the last write was cut
        line = data[pos:newline]
        if line.strip():
            try:
                ids.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                break
        pos = good_end = newline + 1
    if good_end < len(data):
        logger.warning("%s: removing %d bytes of a cut last record", path, len(data) - good_end)
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return ids


def dropped_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".jsonl") + ".dropped.jsonl")


class JsonlAppender:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict) -> None:
        # One write + flush per record: a crash loses at most the line being written.
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# --- filters (upstream's) ----------------------------------------------------------------------

def question_ok(question: str, options: UnifyOptions) -> bool:
    return 0 < len(question) <= options.max_question_chars


def answer_ok(answer: str, options: UnifyOptions) -> bool:
    return bool(answer) and not any(word in answer for word in options.banned_answer_words)


def passage_excerpt(text: str, limit: int) -> str:
    # Upstream escapes newlines before cutting, so the prompt keeps its own line structure.
    return text.replace("\n", "\\n")[:limit]


# --- the client ---------------------------------------------------------------------------------

Complete = Callable[[str, int | None], "asyncio.Future[str]"]


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError))


async def call_with_retries(make_call, options: UnifyOptions, sleep=asyncio.sleep) -> str:
    """Retry transient failures with exponential backoff and jitter; 4xx errors are final."""
    attempt = 0
    while True:
        try:
            return await make_call()
        except Exception as exc:
            if not _retryable(exc):
                raise
            if attempt >= options.max_retries:
                raise
            delay = min(options.backoff_s * 2**attempt, 30.0) * (0.5 + random.random())
            logger.debug("retry %d after %s: %.1f s", attempt + 1, type(exc).__name__, delay)
            await sleep(delay)
            attempt += 1


def openai_complete(client, options: UnifyOptions):
    async def complete(prompt: str, max_tokens: int | None) -> str:
        async def once() -> str:
            kwargs: dict = {}
            if max_tokens:
                kwargs["max_tokens"] = max_tokens
            if options.temperature is not None:
                kwargs["temperature"] = options.temperature
            response = await client.chat.completions.create(
                model=options.model, messages=[{"role": "user", "content": prompt}], **kwargs)
            return (response.choices[0].message.content or "").strip()

        return await call_with_retries(once, options)

    return complete


async def unify_passage(passage: Passage, complete, options: UnifyOptions) -> dict:
    import openai

    try:
        question = None
        for _ in range(options.question_tries):
            text = passage_excerpt(passage.text, options.question_chars)
            candidate = await complete(
                options.question_prompt.format(language=options.language, text=text),
                options.question_max_tokens)
            if question_ok(candidate, options):
                question = candidate
                break
        if question is None:
            raise Dropped(f"no question within {options.max_question_chars} characters")
        answer = None
        for _ in range(options.answer_tries):
            text = passage_excerpt(passage.text, options.answer_chars)
            candidate = await complete(
                options.answer_prompt.format(language=options.language, question=question,
                                             text=text),
                options.answer_max_tokens)
            if answer_ok(candidate, options):
                answer = candidate
                break
        if answer is None:
            raise Dropped("every answer was empty or cited the reference")
    except openai.APIStatusError as exc:
        if _retryable(exc):
            raise
        if is_context_length_error(exc):
            raise ContextLengthExceeded(exc.message) from exc
        if exc.status_code in (401, 403, 404):
            raise EndpointRefused(f"HTTP {exc.status_code}: {exc.message}") from exc
        raise Dropped(f"HTTP {exc.status_code}: {exc.message}") from exc
    return {"id": passage.id, "source": options.source, "conversations": [
        {"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


async def unify(passages: Sequence[Passage], output: Path, complete, options: UnifyOptions,
                progress: bool = True) -> UnifyStats:
    stats = UnifyStats(total=len(passages))
    done = repair_jsonl(output)
    dropped_file = dropped_path(output)
    dropped_ids = repair_jsonl(dropped_file)
    skip = done if options.retry_dropped else done | dropped_ids
    pending = [p for p in passages if p.id not in skip]
    stats.already_done = len(passages) - len(pending)
    if stats.already_done:
        logger.info("resuming: %d of %d passages already done", stats.already_done, len(passages))
    out, drop = JsonlAppender(output), JsonlAppender(dropped_file)
    queue: asyncio.Queue[Passage] = asyncio.Queue()
    for p in pending:
        queue.put_nowait(p)

    from tqdm import tqdm

    bar = tqdm(total=len(pending), desc="unify", unit="passage", disable=not progress)

    async def worker() -> None:
        while True:
            try:
                passage = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if stats.fatal:
                return
            try:
                record = await unify_passage(passage, complete, options)
                out.write(record)
                stats.written += 1
            except Dropped as exc:
                drop.write({"id": passage.id, "reason": str(exc)})
                stats.dropped += 1
                stats.drop_reasons[_reason(str(exc))] += 1
            except ContextLengthExceeded as exc:
                stats.failed += 1
                stats.context_exceeded += 1
                stats.context_message = stats.context_message or str(exc)
                stats.fail_reasons["prompt longer than the server's context (HTTP 400 "
                                   "context_length_exceeded)"] += 1
            except EndpointRefused as exc:
                stats.fatal = stats.fatal or str(exc)
                return
            except Exception as exc:  # retries exhausted: not recorded, a rerun tries again
                stats.failed += 1
                stats.fail_reasons[_reason(f"{type(exc).__name__}: {exc}")] += 1
                if len(stats.errors) < 5:
                    stats.errors.append(f"{passage.id}: {type(exc).__name__}: {exc}")
            bar.update(1)
            bar.set_postfix(ok=stats.written, dropped=stats.dropped, failed=stats.failed)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, options.concurrency))))
    finally:
        bar.close()
        out.close()
        drop.close()
    ids = {p.id for p in passages}
    stats.kept = len(repair_jsonl(output) & ids)
    return stats


def _reason(text: str, limit: int = 100) -> str:
    """A drop or failure reason short enough to count alike ones together."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
