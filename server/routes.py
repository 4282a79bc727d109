"""HTTP glue: thin routes over the serving modules.

Every API request is admitted (or refused) by the life cycle, recorded for telemetry exactly once,
and watched for client disconnects, so the engine stops working for clients that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from server import __version__
from server.errors import APIError, engine_failure, error_response
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.serving_common import ServingResult
from server.telemetry import RequestRecord

logger = logging.getLogger(__name__)
router = APIRouter()


class SSEResponse(StreamingResponse):
    """Streams SSE events and cancels the stream as soon as the client disconnects.

    Starlette only notices a gone client on its next write; a request still queued in the engine
    writes nothing, so we listen for `http.disconnect` ourselves.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str],
                 on_disconnect: Callable[[], None]) -> None:
        super().__init__(events, headers={**headers, "Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
        self.events = events
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event.encode(),
                            "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        await _race(stream(), disconnect(), self.on_disconnect, self.events)


async def _race(work: Awaitable, disconnect: Awaitable, on_disconnect: Callable[[], None],
                events: AsyncIterator[str] | None = None):
    """Run `work` until done or until the client disconnects (then cancel it)."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(disconnect)
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work_task.done():
            on_disconnect()
            work_task.cancel()
        watch_task.cancel()
    try:
        return await work_task
    except (asyncio.CancelledError, OSError):
        if events is not None and hasattr(events, "aclose"):
            await events.aclose()  # closes the engine generator: the request is aborted
        return None


async def _handle(request: Request, endpoint: str, id_prefix: str, body_model, handler
                  ) -> Response:
    state = request.app.state
    record = RequestRecord(request_id=request.scope["state"]["request_id"], endpoint=endpoint,
                           completion_id=f"{id_prefix}-{uuid.uuid4().hex}")
    # Only the served name becomes a label value: clients' typos must not grow the metrics.
    record.model = body_model.model if body_model.model == state.model.name else "unknown"
    record.stream = bool(body_model.stream)
    telemetry = state.telemetry
    handed_to_stream = False  # then the stream records the request when it ends
    try:
        state.lifecycle.admit(record.completion_id)
        telemetry.start(record)

        def gone() -> None:
            record.client_disconnected = True
            record.status = 499  # nginx's "client closed request", for logs and metrics

        result: ServingResult | None = await _race(
            handler(body_model, record), _wait_disconnect(request), gone)
        if result is None:
            return Response(status_code=499)
        if result.stream is not None:
            handed_to_stream = True
            return SSEResponse(_finishing(result.stream, record, state), result.headers, gone)
        return JSONResponse(result.body, headers=result.headers)
    except APIError as exc:
        record.status, record.error_code = exc.status, exc.code
        if exc.status == HTTPStatus.TOO_MANY_REQUESTS:
            telemetry.rejected(state.model.name, endpoint, exc.code or "overloaded")
        return error_response(exc)
    except Exception as exc:  # noqa: BLE001 - never a bare 500 page
        logger.exception("Request %s failed", record.request_id)
        error = engine_failure(exc)
        record.status, record.error_code = error.status, error.code
        return error_response(error)
    finally:
        if not handed_to_stream:
            _finish(record, state)


def _finish(record: RequestRecord, state) -> None:
    record.duration = time.perf_counter() - record.started
    state.lifecycle.release(record.completion_id)
    state.telemetry.finish(record)


async def _finishing(events: AsyncIterator[str], record: RequestRecord, state
                     ) -> AsyncIterator[str]:
    """Pass a stream through; release and record the request when it ends in any way."""
    try:
        async for event in events:
            yield event
    finally:
        _finish(record, state)


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post("/v1/chat/completions", tags=["OpenAI"])
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _handle(request, "/v1/chat/completions", "chatcmpl", body,
                         request.app.state.chat.create)


@router.post("/v1/completions", tags=["OpenAI"])
async def completions(body: CompletionRequest, request: Request) -> Response:
    return await _handle(request, "/v1/completions", "cmpl", body,
                         request.app.state.completions.create)


@router.get("/v1/models", tags=["OpenAI"])
async def models(request: Request) -> dict:
    model = request.app.state.model
    return {"object": "list", "data": [{
        "id": model.name, "object": "model", "created": model.created, "owned_by": "huatuo-serve",
        "root": model.name, "max_model_len": model.max_model_len}]}


@router.get("/health", tags=["Operations"])
async def health(request: Request) -> Response:
    lifecycle = request.app.state.lifecycle
    if lifecycle.healthy:
        try:
            await request.app.state.engine.check_health()
            return Response(status_code=200)
        except Exception:  # noqa: BLE001 - any failure means unhealthy
            lifecycle.engine_dead = True
    reason = "draining" if lifecycle.draining else "engine dead"
    return JSONResponse({"status": reason}, status_code=503)


@router.get("/version", tags=["Operations"])
async def version(request: Request) -> dict:
    import vllm

    return {"version": __version__, "vllm": vllm.__version__, "model": request.app.state.model.name}
