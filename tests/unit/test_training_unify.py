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


def _bad_request(message: str, body: dict | None = None) -> openai.BadRequestError:
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    return openai.BadRequestError(message, response=httpx.Response(400, request=request),
                                  body=body)


class RefusingLLM(FakeLLM):
    """Answers of the listed passages raise the given error."""

    def __init__(self, error_for: dict[str, Exception]) -> None:
        super().__init__()
        self.error_for = error_for

    async def __call__(self, prompt: str, max_tokens: int | None) -> str:
        pid = prompt.split("PASSAGE ")[1][:2]
        if "<reply>" in prompt and pid in self.error_for:
            raise self.error_for[pid]
        return await super().__call__(prompt, max_tokens)


def test_context_length_errors_are_counted_not_recorded(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    vllm = _bad_request("This model's maximum context length is 512 tokens. However, you "
                        "requested 731 tokens.")
    openai_style = _bad_request("too long", body={"code": "context_length_exceeded"})
    other = _bad_request("Invalid 'temperature'")
    llm = RefusingLLM({"p0": vllm, "p1": openai_style, "p2": other})
    stats = asyncio.run(unify(PASSAGES, out, llm, options(), progress=False))
    assert (stats.written, stats.dropped, stats.failed) == (3, 1, 2)
    assert stats.context_exceeded == 2
    assert stats.context_message in ("too long", vllm.message)
    assert stats.fail_reasons == {
        "prompt longer than the server's context (HTTP 400 context_length_exceeded)": 2}
    # Only the passage's own problem is recorded as dropped; a rerun retries p0 and p1.
    assert [r["id"] for r in read_jsonl(dropped_path(out))] == ["p2"]
    assert stats.drop_reasons == {"HTTP 400: Invalid 'temperature'": 1}
    assert (stats.kept, stats.total) == (3, 6) and stats.kept_fraction == 0.5
    rerun = asyncio.run(unify(PASSAGES, out, FakeLLM(), options(), progress=False))
    assert rerun.written == 2 and rerun.kept == 5


def test_rejected_key_stops_the_run(tmp_path: Path) -> None:
    out = tmp_path / "u.jsonl"
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    refused = openai.AuthenticationError("Incorrect API key", body=None,
                                         response=httpx.Response(401, request=request))
    llm = RefusingLLM({f"p{i}": refused for i in range(6)})
    stats = asyncio.run(unify(PASSAGES, out, llm, options(), progress=False))
    assert stats.fatal.startswith("HTTP 401")
    assert stats.written == stats.dropped == 0
    assert not read_jsonl(dropped_path(out))  # nothing recorded: a rerun with a key redoes all
    # The workers stop: at most one answer request per worker after the refusal.
    answers = [p for p in llm.prompts if "<reply>" in p]
    assert len(answers) <= 3


def test_summary_and_verdict(capsys) -> None:
    import argparse
    from collections import Counter

    from adapters.training.unify import UnifyStats
    from adapters.training.unify_cli import print_summary, verdict

    args = argparse.Namespace(output=Path("u.jsonl"), min_kept_fraction=0.5, max_retries=5,
                              base_url="http://h/v1")
    stats = UnifyStats(total=48, dropped=37, failed=11, kept=0, context_exceeded=11,
                       context_message="maximum context length is 512 tokens",
                       drop_reasons=Counter({"no question within 180 characters": 37}),
                       fail_reasons=Counter({"prompt longer than the server's context": 11}))
    print_summary(stats, args)
    text = capsys.readouterr().out
    assert "48 passages; 0 (0%) are in u.jsonl" in text
    assert "    37  no question within 180 characters" in text
    assert "    11  prompt longer than the server's context" in text
    code, message = verdict(stats, args)
    assert code == 1 and "--max-model-len" in message and "\n" not in message
    stats.context_exceeded = stats.failed = 0
    code, message = verdict(stats, args)
    assert code == 1 and "only 0 of 48 passages (0%) were kept" in message
    stats.kept = 24
    assert verdict(stats, args) == (0, "")
    stats.fatal = "HTTP 401: Incorrect API key"
    assert verdict(stats, args)[0] == 2
