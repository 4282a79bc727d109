"""One chat completion against an OpenAI-compatible server, timed.

Streaming requests time every content chunk: TTFT (first content), ITL (gaps between chunks),
TPOT ((E2E - TTFT) / (output tokens - 1)) and E2E. Non-streaming requests only have E2E (and
TPOT as E2E / output tokens). Errors are results too, never exceptions: an HTTP error status, a
connection failure, a timeout, an `{"error": ...}` chunk inside a 200 stream, or a stream that
ends without `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import httpx

from loadtests.sse import sse_data
from loadtests.workloads import BenchRequest

SESSION_HEADER = "X-Session-ID"


@dataclass
class SamplingOptions:
    """Sampling fields sent with every request; None leaves the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    extra_body: dict = field(default_factory=dict)

    def fields(self) -> dict:
        out = {k: v for k, v in (("temperature", self.temperature), ("top_p", self.top_p),
                                 ("seed", self.seed)) if v is not None}
        return {**out, **self.extra_body}


@dataclass
class RequestResult:
    ok: bool
    start: float  # time.perf_counter() when the request was sent
    e2e: float = 0.0  # seconds until the last byte
    ttft: float | None = None  # seconds until the first content chunk (streaming only)
    itl: list[float] = field(default_factory=list)  # gaps between content chunks (streaming)
    output_tokens: int = 0  # from `usage` when the server sent it, else counted chunks
    prompt_tokens: int | None = None
    usage_reported: bool = False
    chunks: int = 0  # content chunks received (streaming)
    text: str = ""  # the answer (first choice)
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None  # short kind: "http_400", "stream_error", "timeout", ...
    error_message: str | None = None
    conversation: int = 0
    turn: int = 0

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (streaming) or overall (non-streaming)."""
        if not self.ok or self.output_tokens < 1:
            return None
        if self.ttft is None:
            return self.e2e / self.output_tokens
        if self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    def content_chunk(self, now: float, last: float | None) -> float:
        """Count a content chunk that arrived at `now` (`last`: the previous one's time, None
        for the first): the first sets TTFT, later ones add an ITL gap. Returns `now`."""
        self.chunks += 1
        if last is None:
            self.ttft = now - self.start
        else:
            self.itl.append(now - last)
        return now

    def to_json(self) -> dict:
        return {**asdict(self), "tpot": self.tpot}


class BenchClient:
    """A pooled HTTP client for one server; create it inside the event loop that uses it."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 stream: bool = True, timeout: float = 600.0,
                 sampling: SamplingOptions | None = None, max_connections: int = 1024,
                 transport: httpx.AsyncBaseTransport | None = None,
                 session_header: bool = False) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.stream = stream
        self.sampling = sampling or SamplingOptions()
        self.session_header = session_header
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout),
                                       limits=limits, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def body(self, request: BenchRequest) -> dict:
        body = {"model": self.model, "messages": request.messages,
                "max_tokens": request.max_tokens, "stream": self.stream,
                **self.sampling.fields()}
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def headers(self, request: BenchRequest) -> dict[str, str]:
        """Per request: with `session_header`, `X-Session-ID` names the consultation, which
        session-pinning routers (vllm-router's consistent_hash) hash to pick a replica."""
        if not self.session_header:
            return {}
        return {SESSION_HEADER: f"consultation-{request.conversation}"}

    async def send(self, request: BenchRequest) -> RequestResult:
        result = RequestResult(ok=False, start=time.perf_counter(),
                               conversation=request.conversation, turn=request.turn)
        try:
            if self.stream:
                await self._stream(request, result)
            else:
                await self._plain(request, result)
        except httpx.TimeoutException as exc:
            _fail(result, "timeout", repr(exc))
        except httpx.HTTPError as exc:
            _fail(result, "connection", repr(exc))
        except ValueError as exc:  # a body or chunk that is not JSON
            _fail(result, "bad_response", repr(exc)[:500])
        result.e2e = time.perf_counter() - result.start
        return result

    async def _plain(self, request: BenchRequest, result: RequestResult) -> None:
        response = await self._http.post(self.url, json=self.body(request),
                                         headers=self.headers(request))
        result.status = response.status_code
        if response.status_code != 200:
            _fail(result, f"http_{response.status_code}", response.text[:500])
            return
        payload = response.json()
        if "error" in payload:
            _fail(result, "response_error", json.dumps(payload["error"])[:500])
            return
        _read_usage(payload.get("usage"), result)
        choices = payload.get("choices") or []
        if choices:
            result.text = (choices[0].get("message") or {}).get("content") or ""
            result.finish_reason = choices[0].get("finish_reason")
        if not result.usage_reported:
            # No usage: count is unknown; one per choice is the honest floor.
            result.output_tokens = len(payload.get("choices") or [])
        result.ok = True

    async def _stream(self, request: BenchRequest, result: RequestResult) -> None:
        async with self._http.stream("POST", self.url, json=self.body(request),
                                     headers=self.headers(request)) as response:
            result.status = response.status_code
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                _fail(result, f"http_{response.status_code}", text[:500])
                return
            last: float | None = None
            done = False
            async for data in sse_data(response.aiter_lines()):
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if "error" in chunk:
                    # The server failed after the 200 status line went out.
                    _fail(result, "stream_error", json.dumps(chunk["error"])[:500])
                    return
                _read_usage(chunk.get("usage"), result)
                choices = chunk.get("choices") or []
                for choice in choices:
                    if choice.get("index", 0) == 0:
                        result.text += (choice.get("delta") or {}).get("content") or ""
                        result.finish_reason = choice.get("finish_reason") or result.finish_reason
                if any(_has_content(choice) for choice in choices):
                    last = result.content_chunk(now, last)
            if not done:
                _fail(result, "stream_truncated", "the stream ended without data: [DONE]")
                return
        if not result.usage_reported:
            result.output_tokens = result.chunks
        result.ok = True


def _has_content(choice: dict) -> bool:
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or choice.get("text"))


def _read_usage(usage: dict | None, result: RequestResult) -> None:
    if usage:
        result.output_tokens = int(usage.get("completion_tokens") or 0)
        result.prompt_tokens = usage.get("prompt_tokens")
        result.usage_reported = True


def _fail(result: RequestResult, kind: str, message: str) -> None:
    result.ok = False
    result.error = kind
    result.error_message = message
