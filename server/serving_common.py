"""What both endpoints' serving logic shares: the request context, checks, token budgets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from server.engine import ModelInfo
from server.errors import bad_request
from server.lifecycle import Lifecycle
from server.protocol import SamplingFields
from server.served_models import ServedModels
from server.settings import ServeSettings
from server.sse import EventStream
from server.telemetry import RequestRecord

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

# vLLM's finish reasons -> OpenAI's.
FINISH_REASONS = {"stop": "stop", "length": "length"}

# Inputs longer than this (characters or token ids) are rendered and (de)tokenised in a worker
# thread, so that health checks and other streams never wait for them. Shorter ones take less
# time than the hop to a thread and back (the gateway's profile, docs/performance.md).
THREAD_THRESHOLD = 4096

T = TypeVar("T")


async def run_sized(size: int, function: Callable[..., T], *args) -> T:
    """`function(*args)` on the event loop for small inputs, in a worker thread for large."""
    if size > THREAD_THRESHOLD:
        return await asyncio.to_thread(function, *args)
    return function(*args)


def messages_size(messages: Sequence) -> int:
    """Characters of chat messages' contents: texts, and the text of each content part.

    Counted without building any string, since measuring runs on the event loop."""
    return sum(_content_size(m.get("content")) for m in messages if isinstance(m, dict))


def _content_size(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) if isinstance(part, dict)
                   and isinstance(part.get("text"), str) else 1 for part in content)
    return 0


def prompt_size(prompt: object) -> int:
    """Characters or token ids of a completions `prompt` (a text, ids, or a list of either)."""
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        return sum(len(p) if isinstance(p, (str, list)) else 1 for p in prompt)
    return 0


@dataclass
class RequestContext:
    """One API request as the serving code sees it.

    `engine_request_id` is the response's `id` and the engine's request id (unique, made by the
    server). `record` is telemetry's observation of the request: serving writes what happened
    into it, and never reads a response value back from it.
    """

    request_id: str
    engine_request_id: str
    record: RequestRecord
    created: int = field(default_factory=lambda: int(time.time()))
    model: str = ""  # the served name the client asked for (the base or an adapter)


@dataclass
class ServingResult:
    """A JSON body, or a stream of payloads to frame as SSE; plus response headers."""

    body: dict | None = None
    stream: EventStream | None = None  # payloads: dicts, or bytes already encoded
    headers: dict[str, str] = field(default_factory=dict)


class EngineService:
    """What both endpoints' serving logic holds."""

    def __init__(self, engine: AsyncLLM, model: ModelInfo, settings: ServeSettings,
                 lifecycle: Lifecycle, served: ServedModels | None = None) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        self.lifecycle = lifecycle
        self.served = served or ServedModels(model.name)



def check_fields(request: SamplingFields) -> None:
    name = request.unsupported_field()
    if name is not None:
        raise bad_request(
            f"'{name}' is not supported by this server (HuatuoGPT2 chat over vLLM); leave it out. "
            "Supported fields are listed in the README.", param=name, code="unsupported_field")


def check_max_tokens(requested: int | None, param: str, model: ModelInfo,
                     settings: ServeSettings) -> None:
    limit = min(settings.max_tokens_limit or model.max_model_len, model.max_model_len)
    if requested is not None and requested > limit:
        why = (f"--max-tokens-limit {limit}" if limit == settings.max_tokens_limit
               else f"the context length {limit}")
        raise bad_request(f"'{param}' is {requested}, more than this server allows ({why}).",
                          param=param, code="max_tokens_too_large")


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
