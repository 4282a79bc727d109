"""Pieces both endpoints share: the served-model check, token budgets, SSE framing."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from server.engine import ModelInfo
from server.errors import APIError, bad_request, engine_failure, error_event
from server.lifecycle import Lifecycle
from server.settings import ServeSettings
from server.telemetry import RequestRecord

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

DONE_EVENT = "data: [DONE]\n\n"
# vLLM's finish reasons -> OpenAI's.
FINISH_REASONS = {"stop": "stop", "length": "length"}


@dataclass
class ServingResult:
    """A JSON body, or an SSE stream of already-framed events; plus response headers."""

    body: dict | None = None
    stream: AsyncIterator[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class EngineService:
    """What both endpoints' serving logic holds."""

    def __init__(self, engine: AsyncLLM, model: ModelInfo, settings: ServeSettings,
                 lifecycle: Lifecycle) -> None:
        self.engine = engine
        self.model = model
        self.settings = settings
        self.lifecycle = lifecycle


async def framed_stream(events: AsyncIterator[str], record: RequestRecord
                        ) -> AsyncIterator[str]:
    """Pass SSE events on; a failure becomes an error event; `[DONE]` always comes last."""
    try:
        async for event in events:
            yield event
    except APIError as exc:
        record.stream_error = exc.code or exc.type
        yield error_event(exc)
    except Exception as exc:  # noqa: BLE001 - a stream must end with an error, not a cut
        logger.exception("Stream %s failed", record.completion_id)
        error = engine_failure(exc)
        record.stream_error = error.code
        yield error_event(error)
    yield DONE_EVENT


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def check_model(requested: str, model: ModelInfo) -> None:
    if requested != model.name:
        raise APIError(
            HTTPStatus.NOT_FOUND,
            f"The model '{requested}' does not exist. This server serves '{model.name}'.",
            param="model", code="model_not_found",
        )


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
