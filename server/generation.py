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

from vllm.inputs.engine import tokens_input

from server.errors import APIError, EngineFailure
from server.lifecycle import Lifecycle

if TYPE_CHECKING:
    from vllm import RequestOutput, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM


class _Deadline:
    """How long a wait for the engine may take, enforced by one timer per request.

    `asyncio.timeout` around every wait schedules and cancels a timer per token, a visible
    share of the API process's CPU at high concurrency; this timer is re-armed only when it
    fires while a later deadline stands (at most once per timeout period). Between waits (the
    caller's work) nothing is timed."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._when: float | None = None  # the current wait's deadline; None between waits
        self._task: asyncio.Task | None = None
        self._cancelling = 0
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    def start(self, seconds: float) -> None:
        self._when = self._loop.time() + seconds
        # The first wait may run in another task than the later ones (server.sse).
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling()
        if self._timer is not None and self._timer.when() > self._when:
            self._timer.cancel()  # a shorter timeout than the pending timer's
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(self._when, self._check)

    def stop(self) -> None:
        self._when = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def ours(self) -> bool:
        """After a CancelledError in a wait: True when it is this deadline's (consumed)."""
        return (self.expired and self._task is not None
                and self._task.uncancel() <= self._cancelling)

    def _check(self) -> None:
        self._timer = None
        if self._when is None:
            return  # between waits: the next wait arms the timer again
        if self._loop.time() < self._when:
            self._timer = self._loop.call_at(self._when, self._check)
            return
        self.expired = True
        assert self._task is not None
        self._task.cancel()


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
    # Token ids as the engine's own rendered input (what vLLM's renderer makes of them): a raw
    # `{"prompt_token_ids": ...}` prompt would cost every request a hop to vLLM's renderer
    # thread and back, for nothing to tokenise (the gateway's profile, docs/performance.md).
    outputs = engine.generate(tokens_input(prompt_token_ids), params, request_id,
                              lora_request=lora_request)
    deadline = _Deadline()
    timeout, phase = queue_timeout, "queue"
    try:
        while True:
            deadline.start(timeout)
            try:
                output = await anext(outputs)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if deadline.ours():
                    raise _timeout_error(phase, queue_timeout, idle_timeout) from None
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the engine raised
                raise EngineFailure(f"engine request {request_id} failed") from exc
            finally:
                deadline.stop()
            terminated = lifecycle.termination(request_id)
            if terminated is not None:
                raise terminated
            yield output
            timeout, phase = idle_timeout, "decode"
        terminated = lifecycle.termination(request_id)
        if terminated is not None:
            raise terminated
    finally:
        deadline.close()
        await outputs.aclose()


def _timeout_error(phase: str, queue_timeout: float, idle_timeout: float) -> APIError:
    if phase == "queue":
        return APIError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"No token within {queue_timeout:g} s (--queue-timeout): the server is "
            "overloaded. Retry later.", code="queue_timeout", headers={"Retry-After": "1"},
        )
    return APIError(
        HTTPStatus.GATEWAY_TIMEOUT,
        f"No new token within {idle_timeout:g} s (--stream-idle-timeout).",
        code="stream_idle_timeout",
    )
