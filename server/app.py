"""The FastAPI application: `build_app(settings, engine, model)`; its lifespan owns the engine."""

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

from server import __version__
from server.engine import ModelInfo
from server.errors import APIError, error_response
from server.lifecycle import Lifecycle
from server.metrics import GatewayMetrics, render_metrics
from server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from server.routes import router
from server.serving_chat import ChatService
from server.serving_completions import CompletionService
from server.serving_tokenize import TokenizeService
from server.serving_tokenize import router as tokenize_router
from server.settings import ServeSettings
from server.telemetry import Telemetry

logger = logging.getLogger(__name__)
ENGINE_WATCH_INTERVAL = 0.5


def _validation_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    name = parts[0]
    for part in parts[1:]:
        name += f"[{part}]" if part.isdigit() else f".{part}"
    return name


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    param = _validation_param(tuple(first.get("loc", ())))
    where = f"'{param}'" if param else "The request body"
    message = f"{where}: {first.get('msg', 'invalid value')}"
    if first.get("type") == "json_invalid":
        message = "The request body is not valid JSON."
    return error_response(APIError(HTTPStatus.BAD_REQUEST, message, param=param,
                                   code="invalid_value"))


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    return error_response(APIError(exc.status_code, str(exc.detail),
                                   code=HTTPStatus(exc.status_code).phrase.lower()
                                   .replace(" ", "_")))


def build_app(
    settings: ServeSettings,
    engine,
    model: ModelInfo,
    *,
    telemetry: Telemetry | None = None,
    metrics: GatewayMetrics | None = None,
    on_engine_dead: Callable[[], None] | None = None,
) -> FastAPI:
    """The gateway over an already-started engine. The app's lifespan shuts the engine down."""
    lifecycle = Lifecycle(settings.max_concurrent_requests)
    if metrics is not None:
        # /metrics tells what /health tells: 1 alive and admitting, 0 engine dead or draining.
        metrics.watch_engine(lambda: lifecycle.healthy and not engine.errored)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watchdog = asyncio.create_task(_watch_engine(app, on_engine_dead))
        try:
            yield
        finally:
            watchdog.cancel()
            engine.shutdown()

    app = FastAPI(
        title="huatuo-serve",
        version=__version__,
        description="OpenAI-compatible API for the HuatuoGPT2 medical chat models.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.model = model
    app.state.lifecycle = lifecycle
    app.state.telemetry = telemetry or Telemetry()
    app.state.chat = ChatService(engine, model, settings, lifecycle)
    app.state.completions = CompletionService(engine, model, settings, lifecycle)
    app.state.tokenize = TokenizeService(engine, model, settings)
    app.include_router(router)
    app.include_router(tokenize_router)
    _add_metrics_route(app, metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Outermost last: request id, then auth, then body limit, then CORS.
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "X-Huatuo-Trimmed-Turns"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys,
                       public_metrics=settings.public_metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_metrics_route(app: FastAPI, metrics: GatewayMetrics | None) -> None:
    @app.get("/metrics", tags=["Operations"], include_in_schema=True)
    async def metrics_endpoint() -> Response:
        payload, content_type = render_metrics(metrics)
        return Response(payload, media_type=content_type)


async def _watch_engine(app: FastAPI, on_engine_dead: Callable[[], None] | None) -> None:
    """Notice a dead engine: fail what is in flight, turn health 503, ask the process to exit."""
    engine, lifecycle = app.state.engine, app.state.lifecycle
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
