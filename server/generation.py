"""One engine request, guarded: timeouts, server-side termination and engine failure.

Both endpoints iterate `guarded_outputs`. A timeout or a termination by the server arrives as
the `APIError` its client gets; anything the engine raises arrives as `EngineFailure`, which
`server.errors.to_api_error` maps (before the first byte: an HTTP error; mid-stream: an error
event).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import TYPE_CHECKING

from server.errors import APIError, EngineFailure
from server.lifecycle import Lifecycle

if TYPE_CHECKING:
    from vllm import RequestOutput, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM


async def guarded_outputs(
    engine: AsyncLLM,
    lifecycle: Lifecycle,
    prompt_token_ids: list[int],
    params: SamplingParams,
    request_id: str,
    *,
    queue_timeout: float,
    idle_timeout: float,
    lora_request: LoRARequest | None = None,
) -> AsyncIterator[RequestOutput]:
    """Yield the engine's outputs; raise APIError on timeout, termination or failure.

    The timeouts wrap only the wait for the engine, never the caller's work between outputs.
    Closing this generator (client gone) closes the engine's, which aborts the request.
    """
    outputs = engine.generate({"prompt_token_ids": prompt_token_ids}, params, request_id,
                              lora_request=lora_request)
    timeout, phase = queue_timeout, "queue"
    try:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    output = await anext(outputs)
            except StopAsyncIteration:
                break
            except TimeoutError:
                if phase == "queue":
                    raise APIError(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        f"No token within {queue_timeout:g} s (--queue-timeout): the server is "
                        "overloaded. Retry later.", code="queue_timeout",
                        headers={"Retry-After": "1"},
                    ) from None
                raise APIError(
                    HTTPStatus.GATEWAY_TIMEOUT,
                    f"No new token within {idle_timeout:g} s (--stream-idle-timeout).",
                    code="stream_idle_timeout",
                ) from None
            except Exception as exc:  # noqa: BLE001 - whatever the engine raised
                raise EngineFailure(f"engine request {request_id} failed") from exc
            terminated = lifecycle.termination(request_id)
            if terminated is not None:
                raise terminated
            yield output
            timeout, phase = idle_timeout, "decode"
        terminated = lifecycle.termination(request_id)
        if terminated is not None:
            raise terminated
    finally:
        await outputs.aclose()
