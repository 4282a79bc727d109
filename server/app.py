"""The FastAPI application: `build_app(settings, engine, model)` over an already-started engine.

The engine's owner is `server.engine.running_engine` (start and shutdown); the app's lifespan
only watches it, so that a dead engine fails what is in flight and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from huatuogpt2.prompt_format import PromptError
from server import __version__
from server.engine import ModelInfo
from server.errors import APIError, error_response, to_api_error
from server.lifecycle import Lifecycle
from server.lora_admin import ADMIN_PATHS, LoraAdmin
from server.metrics import GatewayMetrics, watch_event_loop_lag
from server.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    RequestIdMiddleware,
    TelemetryMiddleware,
)
from server.playground import PUBLIC_PATHS, add_playground
from server.routes import Gateway, api_router
from server.served_models import ServedModels
from server.serving_chat import TRIMMED_HEADER, ChatService
from server.serving_completions import CompletionService
from server.serving_render import RenderService
from server.serving_tokenize import TokenizeService
from server.settings import ServeSettings
from server.telemetry import Telemetry, record_of

logger = logging.getLogger(__name__)
ENGINE_WATCH_INTERVAL = 0.5


def build_app(
    settings: ServeSettings,
    engine,
    model: ModelInfo,
    *,
    telemetry: Telemetry | None = None,
    metrics: GatewayMetrics | None = None,
    on_engine_dead: Callable[[], None] | None = None,
    served: ServedModels | None = None,
    lora_admin: LoraAdmin | None = None,
) -> FastAPI:
    """The gateway over an already-started engine; `served` names the base model and its LoRA
    adapters (the base alone by default), `lora_admin` loads more at runtime (off by default)."""
    lifecycle = Lifecycle(settings.max_concurrent_requests)
    served = served or ServedModels(model.name)
    chat = ChatService(engine, model, settings, lifecycle, served)
    completions = CompletionService(engine, model, settings, lifecycle, served)
    gateway = Gateway(
        settings=settings, engine=engine, model=model, lifecycle=lifecycle,
        telemetry=telemetry or Telemetry(), metrics=metrics,
        chat=chat, completions=completions,
        tokenizer=TokenizeService(engine, model, settings, served),
        renderer=RenderService(chat, completions),
        served=served,
        lora_admin=lora_admin or LoraAdmin(settings, engine, served, base=None, max_rank=None),
    )
    if metrics is not None:
        # /metrics tells what /health tells: 1 alive and admitting, 0 engine dead or draining.
        metrics.watch_engine(lambda: gateway.healthy)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watchers = [asyncio.create_task(_watch_engine(gateway, on_engine_dead))]
        if metrics is not None:
            watchers.append(asyncio.create_task(watch_event_loop_lag(metrics.loop_lag)))
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()

    app = FastAPI(
        title="huatuo-serve",
        version=__version__,
        description="OpenAI-compatible API for the HuatuoGPT2 medical chat models.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway  # for the runner's drain; routes hold the gateway themselves
    app.include_router(api_router(gateway))
    if settings.playground:
        add_playground(app)

    async def openai_error(request: Request, exc: Exception) -> Response:
        error = to_api_error(exc, request.scope.get("state", {}).get("request_id"))
        if (record := record_of(request.scope)) is not None:
            record.error_code = error.code
        return error_response(error)

    for kind in (RequestValidationError, StarletteHTTPException, APIError, PromptError,
                 Exception):
        app.add_exception_handler(kind, openai_error)
    # Outermost last: telemetry, request id, auth, body limit, CORS.
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", TRIMMED_HEADER])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys,
                       public_metrics=settings.public_metrics,
                       public_paths=PUBLIC_PATHS if settings.playground else (),
                       admin_keys=settings.admin_api_key, admin_paths=ADMIN_PATHS)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(TelemetryMiddleware, telemetry=gateway.telemetry)
    return app


async def _watch_engine(gateway: Gateway, on_engine_dead: Callable[[], None] | None) -> None:
    """Notice a dead engine: fail what is in flight, turn health 503, ask the process to exit."""
    engine, lifecycle = gateway.engine, gateway.lifecycle
    while not engine.errored:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL)
    logger.error("The inference engine died; failing requests in flight and exiting.")
    lifecycle.engine_dead = True

    async def no_abort(_: list[str]) -> None:
        return None  # a dead engine fails its own requests (EngineDeadError)

    await lifecycle.terminate_all(
        APIError(HTTPStatus.SERVICE_UNAVAILABLE, "The inference engine died.",
                 code="engine_dead"), no_abort)
    # Let the failed requests send their errors before the process goes.
    await lifecycle.wait_idle(5.0)
    if on_engine_dead is not None:
        on_engine_dead()
