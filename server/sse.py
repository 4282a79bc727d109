"""Server-sent events: the one place that frames and sends a stream.

Both endpoints yield payloads (dicts, or the bytes of one already encoded, for the hot path
of plain text deltas); `framed_stream` turns them into `data: {...}` events, turns any failure
into one OpenAI-shaped error event, and always ends with `data: [DONE]`: a stream never just
stops. `SSEResponse` sends them with keep-alive comment pings (so proxies do not cut a stream
that waits in the queue) and notices a client that goes away even while nothing is being
written.

`SSEResponse` is our own small ASGI response rather than sse-starlette's: that one wraps every
send in an anyio cancel scope and runs each stream in a task group, which the gateway's
profile showed as about a sixth of the API process's CPU at 32 concurrent streams
(docs/performance.md). Here a chunk costs one `send` call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.errors import APIError, to_api_error

DONE_EVENT = b"data: [DONE]\n\n"
PING_EVENT = b": ping\n\n"


def encode_event(payload: dict | bytes) -> bytes:
    """One `data:` event; bytes are a payload already encoded as JSON."""
    if isinstance(payload, bytes):
        return b"data: " + payload + b"\n\n"
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(error: APIError) -> bytes:
    return b"data: " + error.json() + b"\n\n"


async def framed_stream(
    payloads: AsyncIterator[dict | bytes], request_id: str,
    on_error: Callable[[APIError], None]
) -> AsyncIterator[bytes]:
    """Frame payloads as events; a failure becomes an error event; `[DONE]` always comes last."""
    try:
        async with contextlib.aclosing(payloads):
            async for payload in payloads:
                yield encode_event(payload)
    except Exception as exc:  # noqa: BLE001 - a stream must end with an error, not a cut
        error = to_api_error(exc, request_id)
        on_error(error)
        yield error_event(error)
    yield DONE_EVENT


async def start_when_answered(payloads: AsyncIterator[dict], wait: float
                              ) -> AsyncIterator[dict]:
    """Wait up to `wait` seconds (0: as long as it takes) for the first payload, so that what
    fails before the engine answers (a queue timeout, an engine error) is answered with its
    HTTP status, as for a request that does not stream. A stream still queued after `wait`
    starts anyway: its keep-alive pings then stop proxies from cutting it, and a failure
    arrives as an error event."""
    first = asyncio.ensure_future(anext(payloads))
    try:
        await asyncio.wait({first}, timeout=wait or None)
    except BaseException:  # the client went away: end the request in the engine too
        await _close(first, payloads)
        raise
    if first.done() and first.exception() is not None:
        await payloads.aclose()
        exc = first.exception()
        if isinstance(exc, StopAsyncIteration):
            return _empty()
        raise exc
    return _after(first, payloads)


async def _empty() -> AsyncIterator[dict]:
    return
    yield


async def _after(first: asyncio.Future, payloads: AsyncIterator[dict]) -> AsyncIterator[dict]:
    try:
        yield await first
        async for payload in payloads:
            yield payload
    except StopAsyncIteration:
        return
    finally:
        await _close(first, payloads)


async def _close(first: asyncio.Future, payloads: AsyncIterator[dict]) -> None:
    """Stop waiting for the first payload, then close the stream (aborting the engine request).
    The generator cannot be closed while the task still runs it."""
    first.cancel()
    with contextlib.suppress(BaseException):
        await first
    await payloads.aclose()


class SSEResponse(Response):
    """A 200 `text/event-stream` of already framed events.

    Pings every `ping_interval` seconds (0: none). A client that disconnects stops the stream
    (closing `events`, which aborts the engine request) and `on_disconnect` is called;
    `on_end` is called once however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str], *,
                 ping_interval: float, on_disconnect: Callable[[], Awaitable[None]],
                 on_end: Callable[[], None] = lambda: None) -> None:
        self.events = events
        self.ping_interval = ping_interval
        self.on_disconnect = on_disconnect
        self.on_end = on_end
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "Cache-Control": "no-cache", "Connection": "keep-alive",
                           "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivered = False
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            streaming = asyncio.ensure_future(self._send_events(send))
            watching = asyncio.ensure_future(_wait_disconnect(receive))
            pinging = (asyncio.ensure_future(self._ping(send)) if self.ping_interval > 0
                       else None)
            try:
                await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (streaming, watching, pinging):
                    if task is not None and not task.done():
                        task.cancel()
                for task in (streaming, watching, pinging):
                    if task is not None:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task  # `events` is closed before the response ends
            if streaming.cancelled():  # the client went away first
                await self.on_disconnect()
                return
            delivered = streaming.result()
            if delivered:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await self.on_disconnect()
        finally:
            self.on_end()

    async def _send_events(self, send: Send) -> bool:
        """Send every event; False when the connection broke under a send."""
        async with contextlib.aclosing(self.events):
            async for event in self.events:
                try:
                    await send({"type": "http.response.body", "body": event,
                                "more_body": True})
                except OSError:  # ASGI 2.4 servers raise it for a closed connection
                    return False
        return True

    async def _ping(self, send: Send) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": PING_EVENT,
                            "more_body": True})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
