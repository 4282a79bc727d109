"""HTTP glue: thin routes over the serving modules.

`api_router(gateway)` binds every route to the gateway's own objects, so a reader sees which
function serves a request. Every API request is admitted (or refused) by the life cycle,
recorded for telemetry exactly once, and watched for client disconnects, so the engine stops
working for clients that are gone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from server import __version__
from server.engine import ModelInfo
from server.errors import error_response, to_api_error
from server.lifecycle import Lifecycle
from server.lora_admin import LoadLoRAAdapterRequest, LoraAdmin, UnloadLoRAAdapterRequest
from server.metrics import GatewayMetrics, render_metrics
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.served_models import ServedModels
from server.serving_chat import ChatService
from server.serving_common import RequestContext, ServingResult
from server.serving_completions import CompletionService
from server.serving_render import RenderService
from server.serving_tokenize import DetokenizeRequest, TokenizeRequest, TokenizeService
from server.settings import ServeSettings
from server.sse import SSEResponse
from server.telemetry import CLIENT_CLOSED, RequestRecord, Telemetry, record_of

Body = TypeVar("Body", ChatCompletionRequest, CompletionRequest)


@dataclass
class Gateway:
    """Everything a request touches, built once per app by `server.app.build_app`."""

    settings: ServeSettings
    engine: Any  # vLLM's AsyncLLM (or a stand-in in tests)
    model: ModelInfo
    lifecycle: Lifecycle
    telemetry: Telemetry
    metrics: GatewayMetrics | None
    chat: ChatService
    completions: CompletionService
    tokenizer: TokenizeService
    renderer: RenderService
    served: ServedModels
    lora_admin: LoraAdmin

    @property
    def healthy(self) -> bool:
        return self.lifecycle.healthy and not self.engine.errored


def api_router(gw: Gateway) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions", tags=["OpenAI"])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await serve_request(gw, request, "/v1/chat/completions", "chatcmpl", body,
                                   gw.chat.create)

    @router.post("/v1/completions", tags=["OpenAI"])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await serve_request(gw, request, "/v1/completions", "cmpl", body,
                                   gw.completions.create)

    @router.get("/v1/models", tags=["OpenAI"])
    async def models(request: Request) -> dict:
        model = gw.model
        record_of(request.scope).model = model.name
        return {"object": "list", "data": gw.served.cards(model.created, model.max_model_len)}

    @router.post("/v1/load_lora_adapter", tags=["Adapters"])
    async def load_lora_adapter(body: LoadLoRAAdapterRequest) -> Response:
        # vLLM's answer: 200 with a plain-text sentence.
        return Response(await gw.lora_admin.load(body), media_type="text/plain")

    @router.post("/v1/unload_lora_adapter", tags=["Adapters"])
    async def unload_lora_adapter(body: UnloadLoRAAdapterRequest) -> Response:
        return Response(await gw.lora_admin.unload(body), media_type="text/plain")

    # For prefix-aware routers: the token ids the endpoint would give the engine (vLLM's shape).
    @router.post("/v1/chat/completions/render", tags=["Routing"])
    async def render_chat(body: ChatCompletionRequest) -> dict:
        return await gw.renderer.render_chat(body)

    @router.post("/v1/completions/render", tags=["Routing"])
    async def render_completion(body: CompletionRequest) -> list[dict]:
        return await gw.renderer.render_completion(body)

    @router.get("/get_load", tags=["Routing"])
    async def get_load() -> dict:
        # vllm-router's power_of_two reads `load`: requests admitted and not yet finished.
        return {"load": len(gw.lifecycle.in_flight)}

    @router.post("/tokenize", tags=["Tokenizer"])
    async def tokenize(body: TokenizeRequest) -> dict:
        return await gw.tokenizer.tokenize(body)

    @router.post("/detokenize", tags=["Tokenizer"])
    async def detokenize(body: DetokenizeRequest) -> dict:
        return await gw.tokenizer.detokenize(body)

    @router.get("/tokenizer_info", tags=["Tokenizer"])
    async def tokenizer_info() -> dict:
        return gw.tokenizer.tokenizer_info()

    @router.get("/health", tags=["Operations"])
    async def health() -> Response:
        # Reads state only: the engine watchdog (server.app) records a dead engine.
        if gw.healthy:
            return Response(status_code=HTTPStatus.OK)
        reason = "draining" if gw.lifecycle.draining else "engine dead"
        return JSONResponse({"status": reason}, status_code=HTTPStatus.SERVICE_UNAVAILABLE)

    @router.get("/version", tags=["Operations"])
    async def version() -> dict:
        import vllm

        return {"version": __version__, "vllm": vllm.__version__, "model": gw.model.name}

    @router.get("/metrics", tags=["Operations"])
    async def metrics() -> Response:
        payload, content_type = render_metrics(gw.metrics)
        return Response(payload, media_type=content_type)

    return router


async def serve_request(
    gw: Gateway, request: Request, endpoint: str, id_prefix: str, body: Body,
    create: Callable[[Body, RequestContext], Awaitable[ServingResult]],
) -> Response:
    """Admit, run `create` while watching for a disconnect, answer JSON or SSE.

    The request's record comes from the telemetry middleware, which hands it to telemetry when
    the response is over; here it learns what only the route knows."""
    request_id = request.scope["state"]["request_id"]
    record = record_of(request.scope)
    record.completion_id = f"{id_prefix}-{uuid.uuid4().hex}"
    # Only the served name becomes a label value: clients' typos must not grow the metrics.
    record.model = body.model if gw.served.serves(body.model) else "unknown"
    record.stream = bool(body.stream)
    ctx = RequestContext(request_id=request_id, engine_request_id=record.completion_id,
                         record=record)
    handed_to_stream = False  # then the stream releases the admission slot when it ends
    try:
        gw.lifecycle.admit(record.completion_id)
        gw.telemetry.start(record)
        result = await _unless_disconnected(create(body, ctx), request, record)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        if result.stream is not None:
            handed_to_stream = True

            async def client_gone() -> None:
                record.client_gone()

            def stream_ended() -> None:
                gw.lifecycle.release(record.completion_id)

            return SSEResponse(result.stream, result.headers, request_id=request_id,
                               on_error=record.stream_failed,
                               ping_interval=gw.settings.sse_ping_interval,
                               on_disconnect=client_gone, on_end=stream_ended)
        return JSONResponse(result.body, headers=result.headers)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an OpenAI-shaped error
        error = to_api_error(exc, request_id)
        record.error_code = error.code
        if error.status == HTTPStatus.TOO_MANY_REQUESTS:
            gw.telemetry.rejected(gw.model.name, endpoint, error.code or "overloaded")
        return error_response(error)
    finally:
        if not handed_to_stream:
            gw.lifecycle.release(record.completion_id)


async def _unless_disconnected(work: Awaitable[ServingResult], request: Request,
                               record: RequestRecord) -> ServingResult | None:
    """Run `work`; if the client disconnects first, cancel it (aborting the engine request)
    and return None."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch_task.cancel()
        if not work_task.done():
            record.client_gone()
            work_task.cancel()
    try:
        return await work_task
    except asyncio.CancelledError:
        if record.client_disconnected:
            return None
        raise


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
