"""Run the gateway under uvicorn with our own signal handling.

uvicorn's default SIGTERM handling closes the listening socket at once, so health checks would
get "connection refused" instead of 503 and streams would be cut at its deadline. We keep
listening while draining: health turns 503, new requests get 503, requests in flight finish
(or end with an error chunk at --shutdown-timeout), then the process exits 0. A dead engine
makes it exit 1, so the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
import uvloop
from vllm.envs import enable_envs_cache

from server.access_log import AccessLog
from server.app import build_app
from server.engine import describe_model, running_engine
from server.logging_setup import third_party_level
from server.lora import Adapter, BaseModel, engine_lora_args
from server.lora_admin import LoraAdmin
from server.metrics import GatewayMetrics
from server.served_models import ServedModels
from server.settings import ServeSettings
from server.telemetry import CompositeTelemetry

logger = logging.getLogger("huatuo.serve")
EXIT_ENGINE_DEAD = 1
EXIT_ADAPTER_FAILED = 1  # the work failed (huatuo/cli.py); bad --lora values exit 2 earlier


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # SIGTERM/SIGINT are ours (see the module docstring), not uvicorn's

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()  # the socket is bound: what it prints is the last line before ready


def serve(settings: ServeSettings, model_dir: Path, adapters: list[Adapter] = (),
          on_ready: Callable[[], None] | None = None) -> int:
    """Serve `model_dir` and the already-checked LoRA `adapters` (server.lora) until stopped;
    `on_ready` runs once the engine is up and the port is bound."""
    # uvloop writes SSE chunks to sockets in C; asyncio's Python transport cost the gateway
    # about a fifth of its CPU in profiles (docs/performance.md).
    return uvloop.run(_serve(settings, model_dir, list(adapters), on_ready))


async def _serve(settings: ServeSettings, model_dir: Path, adapters: list[Adapter],
                 on_ready: Callable[[], None] | None) -> int:
    with running_engine(settings, model_dir, adapters) as engine:
        return await _serve_engine(settings, model_dir, engine, adapters, on_ready)


async def _served_models(engine, name: str, adapters: list[Adapter]) -> ServedModels:
    """The base and its adapters, each adapter's weights loaded into the engine now (so the
    first request does not pay for it)."""
    served = ServedModels(name)
    for adapter in adapters:
        request = served.new_request(adapter)
        try:
            await engine.add_lora(request)
        except Exception as exc:  # noqa: BLE001 - the engine's own reason, for the operator
            raise AdapterLoadFailed(f"LoRA adapter '{adapter.name}' ({adapter.path}): the "
                                    f"engine could not load it: {exc}") from exc
        served.add(request)
    return served


class AdapterLoadFailed(Exception):
    """An adapter passed our checks but the engine refused it: the server does not start."""


async def _serve_engine(settings: ServeSettings, model_dir: Path, engine,
                        adapters: list[Adapter], on_ready: Callable[[], None] | None) -> int:
    model = describe_model(engine, settings, model_dir)
    _log_kv_capacity(engine, model.max_model_len)
    try:
        served = await _served_models(engine, model.name, adapters)
    except AdapterLoadFailed as exc:
        logger.error("%s", exc)
        return EXIT_ADAPTER_FAILED
    metrics = GatewayMetrics(served.names())
    lora_admin = None
    if settings.allow_runtime_lora:
        lora_admin = LoraAdmin(settings, engine, served, BaseModel.read(model_dir),
                               engine_lora_args(settings, adapters)["max_lora_rank"], metrics)
    exit_code = 0
    server: _Server | None = None

    def on_engine_dead() -> None:
        nonlocal exit_code
        exit_code = EXIT_ENGINE_DEAD
        if server is not None:
            server.should_exit = True

    app = build_app(settings, engine, model,
                    telemetry=CompositeTelemetry(metrics, AccessLog(settings.log_content)),
                    metrics=metrics, on_engine_dead=on_engine_dead, served=served,
                    lora_admin=lora_admin)
    # vLLM reads its settings from os.environ on every access, and its stat logger and output
    # processor access some per token: freeze them now, as vLLM does in its engine core.
    enable_envs_cache()
    # Everything imported so far lives as long as the process: move it out of the collector's
    # way, or a full collection (about 340 ms here) stalls every stream now and then.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port,
        log_level=third_party_level(settings.log_level),
        access_log=False, timeout_keep_alive=30,
        # Streams are already ended by our drain; uvicorn only closes idle connections.
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, on_ready)
    loop = asyncio.get_running_loop()
    drain_task: asyncio.Task | None = None

    def on_signal(signum: int) -> None:
        nonlocal drain_task
        if drain_task is not None:  # a second signal: stop now
            server.force_exit = True
            server.should_exit = True
            return
        logger.info("Received %s: draining for up to %.0f s.", signal.Signals(signum).name,
                    settings.shutdown_timeout)
        drain_task = loop.create_task(_drain_then_exit(app, server, settings.shutdown_timeout))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    logger.info("Serving %s (%s) on http://%s:%d", ", ".join(served.names()), model_dir,
                settings.host, settings.port)
    await server.serve()
    return exit_code


def _log_kv_capacity(engine, max_model_len: int) -> None:
    """The capacity figures operators size replicas by (k8s/README.md), at info level: vLLM's
    own start-up lines are shown only with --log-level debug."""
    cache = engine.vllm_config.cache_config
    tokens = (cache.num_gpu_blocks or 0) * cache.block_size
    logger.info("KV cache: %s tokens; maximum concurrency for %s tokens per request: %.1fx",
                f"{tokens:,}", f"{max_model_len:,}", tokens / max_model_len)


async def _drain_then_exit(app, server: uvicorn.Server, timeout: float) -> None:
    gateway = app.state.gateway
    await gateway.lifecycle.drain(timeout, gateway.engine.abort)
    server.should_exit = True
