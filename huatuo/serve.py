"""`huatuo serve`: resolve the checkpoint (the demo model, or a published one converted once),
then run the gateway with vLLM in process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from adapters.checkpoint.auto import prepare_for_serving
from huatuo.cli import EXIT_USAGE
from huatuogpt2.demo_checkpoint import ensure_demo_model
from server.logging_setup import configure_logging
from server.lora import AdapterError, check_startup_adapters
from server.settings import ServeSettings, add_serve_arguments, settings_from_args

logger = logging.getLogger("huatuo.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serve_arguments(parser)


def resolve_model_dir(settings: ServeSettings) -> Path:
    """The Llama-layout directory to load: the demo model, the given one, or its conversion."""
    if settings.model is None:
        path = ensure_demo_model(settings.cache_dir)
        logger.warning(
            "No --model given: serving the tiny demo model from %s. Its answers are noise; "
            "it exists to try the API.", path,
        )
        return path
    path = Path(settings.model).expanduser()
    if not (path / "config.json").exists():
        raise SystemExit(f"--model {path}: no config.json there; expected a checkpoint directory.")
    return prepare_for_serving(path, settings.cache_dir)


def run(args: argparse.Namespace, on_ready: Callable[[], None] | None = None) -> int:
    """Serve; `on_ready` runs once the server accepts requests (`huatuo demo` prints its
    examples there, so they are the last lines before it is ready)."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    model_dir = resolve_model_dir(settings)
    try:
        adapters = check_startup_adapters(settings, model_dir)
    except (AdapterError, ValueError) as exc:
        print(f"huatuo serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The CPU backend otherwise tries to reserve most of the machine's memory for the KV cache.
    if settings.kv_cache_space is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_space)
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from server.runner import serve  # imports vLLM: only once the checkpoint is ready

    return serve(settings, model_dir, adapters, on_ready)
