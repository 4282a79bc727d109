"""The timed client of `huatuo bench` against scripted HTTP responses (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx

from loadtests.client import BenchClient, RequestResult, SamplingOptions
from loadtests.workloads import BenchRequest

REQUEST = BenchRequest([{"role": "user", "content": "头痛怎么办？"}], max_tokens=3)


def _sse(*events: dict | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def _delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def _send(handler, stream: bool = True, sampling: SamplingOptions | None = None
          ) -> RequestResult:
    async def go() -> RequestResult:
        client = BenchClient("http://test", "m", stream=stream, sampling=sampling,
                             transport=httpx.MockTransport(handler))
        try:
            return await client.send(REQUEST)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_stream_is_timed_and_usage_wins_over_chunk_count() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        body = _sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                    _delta("多"), _delta(""), _delta("休息"), _delta("。", "length"),
                    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}},
                    "[DONE]")
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    result = _send(handler, sampling=SamplingOptions(temperature=0.0, extra_body={"top_k": 1}))
    assert result.ok and result.error is None
    assert result.chunks == 3  # role-only and empty deltas carry no text
    assert len(result.itl) == 2
    assert result.output_tokens == 4 and result.prompt_tokens == 12 and result.usage_reported
    assert result.text == "多休息。" and result.finish_reason == "length"
    assert result.ttft is not None and 0 <= result.ttft <= result.e2e
    assert seen["stream"] is True and seen["stream_options"] == {"include_usage": True}
    assert seen["max_tokens"] == 3 and seen["temperature"] == 0.0 and seen["top_k"] == 1
    assert "top_p" not in seen  # unset sampling fields leave the server's defaults


def test_without_usage_the_chunks_are_counted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(_delta("a"), _delta("b"), "[DONE]"))

    result = _send(handler)
    assert result.ok and result.output_tokens == 2 and not result.usage_reported


def test_error_chunk_inside_a_200_stream_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"error": {"message": "engine died", "type": "server_error", "param": None,
                           "code": None}}
        return httpx.Response(200, content=_sse(_delta("a"), error, "[DONE]"))

    result = _send(handler)
    assert not result.ok
    assert result.status == 200
    assert result.error == "stream_error" and "engine died" in result.error_message


def test_stream_cut_before_done_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_sse(_delta("a")))

    result = _send(handler)
    assert not result.ok and result.error == "stream_truncated"


def test_http_errors_and_connection_failures() -> None:
    def rejected(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad", "type": "invalid"}})

    result = _send(rejected)
    assert not result.ok and result.error == "http_400" and result.status == 400

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = _send(refused)
    assert not result.ok and result.error == "connection"

    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"data: {not json\n\n")

    assert _send(garbage).error == "bad_response"


def test_non_streaming_reads_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is False
        return httpx.Response(200, json={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "多休息"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})

    result = _send(handler, stream=False)
    assert result.ok and result.output_tokens == 2 and result.ttft is None
    assert result.text == "多休息" and result.finish_reason == "stop"
    assert result.tpot == result.e2e / 2
