"""Unification logic without a server: filters, retries with backoff, resumable output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from adapters.training.readers import Passage
from adapters.training.unify import (
    UnifyOptions,
    call_with_retries,
    dropped_path,
    repair_jsonl,
    unify,
)


def options(**kw) -> UnifyOptions:
    return UnifyOptions(model="m", concurrency=3, **kw)


class FakeLLM:
    """Question prompts -> a question; answer prompts -> scripted answers per passage."""

    def __init__(self, answers: dict[str, list[str]] | None = None,
                 long_question_for: tuple[str, ...] = ()) -> None:
        self.answers = answers or {}
        self.long_question_for = long_question_for
        self.prompts: list[str] = []

    async def __call__(self, prompt: str, max_tokens: int | None) -> str:
        self.prompts.append(prompt)
        await asyncio.sleep(0)
        pid = prompt.split("PASSAGE ")[1][:2]
        if "<question>: " in prompt and "<reply>" not in prompt:
            return "Q" * 200 if pid in self.long_question_for else f"问题{pid}？"
        scripted = self.answers.get(pid)
        return scripted.pop(0) if scripted else f"回答{pid}。"


PASSAGES = [Passage(f"p{i}", f"PASSAGE p{i}\n正文{i}") for i in range(6)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unify_writes_conversations_and_applies_upstream_filters(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    llm = FakeLLM(answers={"p1": ["可参考文献。", "好的回答。"], "p2": ["参考", "仍然参考"]},
                  long_question_for=("p3",))
    stats = asyncio.run(unify(PASSAGES, out, llm, options(), progress=False))
    records = {r["id"]: r for r in read_jsonl(out)}
    assert set(records) == {"p0", "p1", "p4", "p5"}
    assert records["p1"]["conversations"] == [
        {"from": "human", "value": "问题p1？"}, {"from": "gpt", "value": "好的回答。"}]
    dropped = {r["id"]: r["reason"] for r in read_jsonl(dropped_path(out))}
    assert set(dropped) == {"p2", "p3"}
    assert (stats.written, stats.dropped, stats.failed) == (4, 2, 0)
    # The passage is cut (400 chars) and its newlines escaped, as upstream does.
    assert "PASSAGE p0\\n正文0" in llm.prompts[0]


def test_rerun_skips_finished_and_dropped_ids(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    asyncio.run(unify(PASSAGES[:3], out, FakeLLM(long_question_for=("p2",)), options(),
                      progress=False))
    llm = FakeLLM()
    stats = asyncio.run(unify(PASSAGES, out, llm, options(), progress=False))
    assert stats.already_done == 3 and stats.written == 3
    assert sorted(r["id"] for r in read_jsonl(out)) == ["p0", "p1", "p3", "p4", "p5"]
    asked = {p.split("PASSAGE ")[1][:2] for p in llm.prompts}
    assert asked == {"p3", "p4", "p5"}
    # --retry-dropped asks again for the dropped one.
    stats = asyncio.run(unify(PASSAGES, out, FakeLLM(), options(retry_dropped=True),
                              progress=False))
    assert stats.written == 1
    assert sorted(r["id"] for r in read_jsonl(out)) == ["p0", "p1", "p2", "p3", "p4", "p5"]


def test_repair_removes_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "conv')
    assert repair_jsonl(path) == {"a", "b"}
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def _status_error(code: int) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    return openai.APIStatusError("boom", response=httpx.Response(code, request=request),
                                 body=None)


def test_retries_transient_errors_with_growing_backoff() -> None:
    delays: list[float] = []
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise _status_error(503 if calls["n"] < 3 else 429)
        return "ok"

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    assert asyncio.run(call_with_retries(flaky, options(backoff_s=1.0), fake_sleep)) == "ok"
    assert len(delays) == 3
    # Exponential with jitter in [0.5, 1.5): 1, 2, 4 seconds nominal.
    for nominal, d in zip((1, 2, 4), delays, strict=True):
        assert 0.5 * nominal <= d < 1.5 * nominal


def test_gives_up_after_max_retries_and_never_retries_4xx() -> None:
    async def nosleep(d: float) -> None:
        return None

    async def always_503() -> str:
        raise _status_error(503)

    with pytest.raises(openai.APIStatusError):
        asyncio.run(call_with_retries(always_503, options(max_retries=2), nosleep))
    calls = {"n": 0}

    async def bad_request() -> str:
        calls["n"] += 1
        raise _status_error(400)

    with pytest.raises(openai.APIStatusError):
        asyncio.run(call_with_retries(bad_request, options(max_retries=5), nosleep))
    assert calls["n"] == 1
