"""Server-sent events: the one place that frames a stream.

Both endpoints yield payload dicts; `framed_stream` turns them into `data: {...}` events,
turns any failure into one OpenAI-shaped error event, and always ends with `data: [DONE]`:
a stream never just stops. `SSEResponse` (sse-starlette's EventSourceResponse) sends them with
keep-alive comment pings (so proxies do not cut a stream that waits in the queue) and notices a
client that goes away even while nothing is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from sse_starlette import EventSourceResponse

from server.errors import APIError, to_api_error

DONE_EVENT = b"data: [DONE]\n\n"


def encode_event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False,
                                  separators=(",", ":")).encode() + b"\n\n"


def error_event(error: APIError) -> bytes:
    return b"data: " + error.json() + b"\n\n"


async def framed_stream(
    payloads: AsyncIterator[dict], request_id: str, on_error: Callable[[APIError], None]
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


class SSEResponse(EventSourceResponse):
    """An SSE response with our framing: pings every `ping_interval` seconds (0: none)."""

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str], *,
                 ping_interval: float, on_disconnect: Callable[[], Awaitable[None]]) -> None:
        async def client_closed(_message: dict) -> None:
            await on_disconnect()

        super().__init__(events, headers={**headers, "Cache-Control": "no-cache"}, sep="\n",
                         ping=ping_interval, client_close_handler_callable=client_closed)
