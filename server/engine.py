"""The vLLM engine, in process: started and shut down in one place, described for serving."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from huatuogpt2.checkpoint_metadata import read_generation_defaults
from server.lora import Adapter, engine_lora_args
from server.settings import ServeSettings

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    def __call__(self, text: str) -> list[int]: ...


@dataclass
class ModelInfo:
    """What the gateway needs to know about the served model."""

    name: str
    max_model_len: int
    encode: Encoder
    # Sampling defaults from the checkpoint's generation_config.json.
    generation_defaults: dict = field(default_factory=dict)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def default_max_new_tokens(self) -> int:
        default = int(self.generation_defaults.get("max_new_tokens", self.max_model_len))
        # Never reserve more than half the context by default, so prompts keep room.
        return max(1, min(default, self.max_model_len // 2))


def engine_args(settings: ServeSettings, model_dir: Path, adapters: list[Adapter] = ()):
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=str(model_dir),
        served_model_name=[settings.model_name],
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        distributed_executor_backend=settings.distributed_executor_backend,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        dtype=settings.dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        enable_prefix_caching=settings.enable_prefix_caching,
        enforce_eager=settings.enforce_eager,
        seed=settings.seed,
        # Engine stats feed vLLM's Prometheus metrics, served on our /metrics.
        disable_log_stats=False,
        # vLLM would log every request; our access log is the one, and it is content-free.
        enable_log_requests=False,
        **engine_lora_args(settings, list(adapters)),
    )


@contextlib.contextmanager
def running_engine(settings: ServeSettings, model_dir: Path, adapters: list[Adapter] = ()
                   ) -> Iterator[AsyncLLM]:
    """The engine's owner: starts it, and shuts it down however the server ends (a port in
    use included). Nothing else starts or stops the engine."""
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(
        engine_args(settings, model_dir, adapters), usage_context=UsageContext.OPENAI_API_SERVER
    )
    try:
        yield engine
    finally:
        engine.shutdown()


def describe_model(engine: AsyncLLM, settings: ServeSettings, model_dir: Path) -> ModelInfo:
    tokenizer = engine.get_tokenizer()

    def encode(text: str) -> list[int]:
        # HuatuoGPT2 prompts carry no BOS (upstream trains with add_special_tokens=False).
        return tokenizer.encode(text, add_special_tokens=False)

    return ModelInfo(
        name=settings.model_name,
        max_model_len=engine.model_config.max_model_len,
        encode=encode,
        generation_defaults=read_generation_defaults(model_dir),
    )
