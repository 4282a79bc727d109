"""Server-sent events: the one place that frames and sends a stream.

Both endpoints yield payloads (dicts, or the bytes of one already encoded, for the hot path
of plain text deltas); `start_when_answered` waits for the engine's first answer, and
`SSEResponse` sends each payload as a `data: {...}` event, turns any failure into one
OpenAI-shaped error event, and always ends with `data: [DONE]`: a stream never just stops. It
sends keep-alive comment pings (so proxies do not cut a stream that waits in the queue) and
notices a client that goes away even while nothing is being written.

`SSEResponse` is our own small ASGI response rather than sse-starlette's: that one wraps every
send in an anyio cancel scope and runs each stream in a task group, which the gateway's
profile showed as about a sixth of the API process's CPU at 32 concurrent streams
(docs/performance.md). Here a chunk costs one `send` call, and no generator layers sit between
the endpoint's payloads and that call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.errors import APIError, to_api_error

DONE_EVENT = b"data: [DONE]\n\n"
PING_EVENT = b": ping\n\n"


Payload = dict | bytes  # bytes: a payload already encoded as JSON
# What an endpoint yields: one payload, or a list of payloads produced at the same moment (say
# the role chunk with the first token, or the last token with the usage), which then go out in
# one write: on a busy host each write to a client's socket is a system call and a wake-up.
Payloads = Payload | list[Payload]


class Last(list):
    """The stream's last payloads: they go out with `[DONE]` in the write that ends the
    response, and the endpoint's generator is closed, not read further. Yield it once the
    engine's outputs have ended (vLLM aborts a request whose output stream is closed early)."""


def encode_event(payload: Payloads) -> bytes:
    """The `data:` event of a payload, or the events of a list of payloads."""
    if isinstance(payload, bytes):
        return b"data: " + payload + b"\n\n"
    if isinstance(payload, list):
        return b"".join(map(encode_event, payload))
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(error: APIError) -> bytes:
    return b"data: " + error.json() + b"\n\n"


@dataclass
class EventStream:
    """The payloads of a stream the engine has been asked for: `first`, the task fetching the
    first payload (done, or still waiting in the queue; None when there is none), then `rest`."""

    first: asyncio.Future | None
    rest: AsyncIterator[Payloads]

    async def close(self) -> None:
        """Stop waiting for the first payload, then close the stream (aborting the engine
        request). The generator cannot be closed while the first task still runs it."""
        if self.first is not None:
            self.first.cancel()
            with contextlib.suppress(BaseException):
                await self.first
        await self.rest.aclose()


async def start_when_answered(payloads: AsyncIterator[Payloads], wait: float
                              ) -> EventStream:
    """Wait up to `wait` seconds (0: as long as it takes) for the first payload, so that what
    fails before the engine answers (a queue timeout, an engine error) is answered with its
    HTTP status, as for a request that does not stream. A stream still queued after `wait`
    starts anyway: its keep-alive pings then stop proxies from cutting it, and a failure
    arrives as an error event."""
    stream = EventStream(asyncio.ensure_future(anext(payloads)), payloads)
    try:
        await asyncio.wait({stream.first}, timeout=wait or None)
    except BaseException:  # the client went away: end the request in the engine too
        await stream.close()
        raise
    if stream.first.done() and stream.first.exception() is not None:
        await payloads.aclose()
        exc = stream.first.exception()
        if isinstance(exc, StopAsyncIteration):
            return EventStream(None, payloads)
        raise exc
    return stream


class SSEResponse(Response):
    """A 200 `text/event-stream` of an endpoint's payloads, each sent as it comes.

    A failure becomes one error event; `[DONE]` always ends the stream. Pings every
    `ping_interval` seconds (0: none). A client that disconnects stops the stream (closing it,
    which aborts the engine request) and `on_disconnect` is called; `on_end` is called once
    however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, stream: EventStream, headers: dict[str, str], *, request_id: str,
                 on_error: Callable[[APIError], None], ping_interval: float,
                 on_disconnect: Callable[[], Awaitable[None]],
                 on_end: Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.request_id = request_id
        self.on_error = on_error
        self.ping_interval = ping_interval
        self.on_disconnect = on_disconnect
        self.on_end = on_end
        self._ended = False  # the last write (ending the response) is out
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "Cache-Control": "no-cache", "Connection": "keep-alive",
                           "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                            await task  # the stream is closed before the response ends
            if streaming.cancelled():  # the client went away first
                await self.on_disconnect()
                return
            if not streaming.result():  # the connection broke under a send
                await self.on_disconnect()
        finally:
            self.on_end()

    async def _send_events(self, send: Send) -> bool:
        """Send every payload as an event, then a failure's error event and `[DONE]` in the
        last write, which ends the response; False when the connection broke under a send."""
        try:
            tail = await self._send_payloads(send)
        finally:
            # Closed before the last write: once that is out, the response is over.
            await self.stream.close()
        if tail is None:
            return False
        self._ended = True
        return await _send_body(send, tail, more_body=False)

    async def _send_payloads(self, send: Send) -> bytes | None:
        """Send the payloads as they come; return what the last write must carry (None when
        the connection broke). The payloads are iterated right here, with no generator layers
        in between: this loop runs once per token of every stream."""
        try:
            if self.stream.first is not None:
                try:
                    first = await self.stream.first
                except StopAsyncIteration:
                    return DONE_EVENT
                if type(first) is Last:
                    return encode_event(first) + DONE_EVENT
                if not await _send_body(send, encode_event(first)):
                    return None
            async for payload in self.stream.rest:
                if type(payload) is Last:
                    return encode_event(payload) + DONE_EVENT
                try:
                    await send({"type": "http.response.body", "body": encode_event(payload),
                                "more_body": True})
                except OSError:  # ASGI 2.4 servers raise it for a closed connection
                    return None
        except Exception as exc:  # noqa: BLE001 - a stream must end with an error, not a cut
            error = to_api_error(exc, self.request_id)
            self.on_error(error)
            return error_event(error) + DONE_EVENT
        return DONE_EVENT

    async def _ping(self, send: Send) -> None:
        while not self._ended:
            await asyncio.sleep(self.ping_interval)
            if self._ended:  # the last write went out while this one slept
                return
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": PING_EVENT,
                            "more_body": True})


async def _send_body(send: Send, event: bytes, more_body: bool = True) -> bool:
    try:
        await send({"type": "http.response.body", "body": event, "more_body": more_body})
    except OSError:
        return False
    return True


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
