"""One chat completion against an OpenAI-compatible server, timed.

Streaming requests time every content chunk: TTFT (first content), ITL (gaps between chunks),
TPOT ((E2E - TTFT) / (output tokens - 1)) and E2E. Non-streaming requests only have E2E (and
TPOT as E2E / output tokens). Errors are results too, never exceptions: an HTTP error status, a
connection failure, a timeout, an `{"error": ...}` chunk inside a 200 stream, or a stream that
ends without `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson

from loadtests.sse import SSEDecoder
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
    """A pooled HTTP client for one server; create it inside the event loop that uses it.

    aiohttp, not httpx: the load generator shares the machine (and often a core) with the
    server it measures, so its cost per streamed token is taken from the server's throughput.
    httpx's pure-Python HTTP parsing and line splitting cost more than twice the CPU per event
    of aiohttp's C parser, events split in bytes (`SSEDecoder`) and `orjson`.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 stream: bool = True, timeout: float = 600.0,
                 sampling: SamplingOptions | None = None, max_connections: int = 1024,
                 session_header: bool = False) -> None:
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.model = model
        self.stream = stream
        self.sampling = sampling or SamplingOptions()
        self.session_header = session_header
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=aiohttp.ClientTimeout(total=timeout), headers=headers)

    async def aclose(self) -> None:
        await self._http.close()

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
        end: float | None = None
        try:
            async with self._http.post(self.url, data=orjson.dumps(self.body(request)),
                                       headers={**_JSON, **self.headers(request)}) as response:
                result.status = response.status
                if response.status != 200:
                    text = (await response.read()).decode(errors="replace")
                    _fail(result, f"http_{response.status}", text[:500])
                elif self.stream:
                    end = await _stream(response, result)
                else:
                    _plain(await response.read(), result)
        # aiohttp's read timeouts are ClientErrors too: they must be caught first.
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            _fail(result, "timeout", repr(exc))
        except aiohttp.ClientError as exc:
            _fail(result, "connection", repr(exc))
        except ValueError as exc:  # a body or chunk that is not JSON
            _fail(result, "bad_response", repr(exc)[:500])
        result.e2e = (end or time.perf_counter()) - result.start
        return result


_JSON = {"Content-Type": "application/json"}


def _plain(body: bytes, result: RequestResult) -> None:
    payload = _json_object(body)
    if "error" in payload:
        _fail(result, "response_error", orjson.dumps(payload["error"]).decode()[:500])
        return
    _read_usage(payload.get("usage"), result)
    choices = payload.get("choices") or []
    if choices:
        result.text = (choices[0].get("message") or {}).get("content") or ""
        result.finish_reason = choices[0].get("finish_reason")
    if not result.usage_reported:
        # No usage: count is unknown; one per choice is the honest floor.
        result.output_tokens = len(choices)
    result.ok = True


async def _stream(response: aiohttp.ClientResponse, result: RequestResult) -> float | None:
    """Read a 200 event stream into `result`. Returns the time `data: [DONE]` arrived (the end
    of the answer), None when the stream failed or ended without it."""
    content = response.content
    decoder = SSEDecoder()
    last: float | None = None
    while True:
        raw = await content.readany()
        now = time.perf_counter()  # the time the bytes arrived, before any parsing
        for data in decoder.feed(raw) if raw else decoder.close():
            if data == _DONE:
                await _drain(content)
                if not result.usage_reported:
                    result.output_tokens = result.chunks
                result.ok = True
                return now
            chunk = _json_object(data)
            if "error" in chunk:
                # The server failed after the 200 status line went out.
                _fail(result, "stream_error", orjson.dumps(chunk["error"]).decode()[:500])
                return None
            if _read_chunk(chunk, result):
                last = result.content_chunk(now, last)
        if not raw:
            _fail(result, "stream_truncated", "the stream ended without data: [DONE]")
            return None


_DONE = b"[DONE]"
_NO_DELTA: dict = {}


def _read_chunk(chunk: dict, result: RequestResult) -> bool:
    """Fold one chunk into `result`: usage, and the first choice's text and finish reason.
    True when any choice carries content (a role-only or empty delta does not)."""
    _read_usage(chunk.get("usage"), result)
    content = False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or _NO_DELTA
        piece = delta.get("content")
        if choice.get("index", 0) == 0:
            if piece:
                result.text += piece
            result.finish_reason = choice.get("finish_reason") or result.finish_reason
        if piece or delta.get("reasoning_content") or choice.get("text"):
            content = True
    return content


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read the body's end after `data: [DONE]`: aiohttp closes a connection whose body was
    not read to the end instead of pooling it. The answer is complete by then, so a failure
    here is not the request's failure, and a server that never ends the body is not waited
    for."""
    try:
        async with asyncio.timeout(_DRAIN_TIMEOUT):
            await content.read()
    except (TimeoutError, aiohttp.ClientError):
        pass


_DRAIN_TIMEOUT = 1.0


def _json_object(data: bytes) -> dict:
    payload = orjson.loads(data)
    if not isinstance(payload, dict):
        raise ValueError(f"not a JSON object: {data[:200]!r}")
    return payload


def _read_usage(usage: dict | None, result: RequestResult) -> None:
    if usage:
        result.output_tokens = int(usage.get("completion_tokens") or 0)
        result.prompt_tokens = usage.get("prompt_tokens")
        result.usage_reported = True


def _fail(result: RequestResult, kind: str, message: str) -> None:
    result.ok = False
    result.error = kind
    result.error_message = message
