"""One engine request, guarded: timeouts, server-side termination and engine failure.

Both endpoints iterate `guarded_outputs`; whatever goes wrong arrives as an `APIError`, so the
caller turns it into an HTTP error (before the first byte) or an error chunk (mid-stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import TYPE_CHECKING

from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError

from server.errors import APIError, bad_request, engine_failure
from server.lifecycle import Lifecycle

if TYPE_CHECKING:
    from vllm import RequestOutput, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


def _engine_error(exc: BaseException) -> APIError:
    if isinstance(exc, VLLMValidationError):
        return bad_request(str(exc), param=exc.parameter)
    if isinstance(exc, VLLMClientError):
        return bad_request(str(exc))
    if isinstance(exc, GracefulHTTPError):
        return APIError(getattr(exc, "status_code", HTTPStatus.SERVICE_UNAVAILABLE), str(exc),
                        code="engine_overloaded", headers={"Retry-After": "1"})
    if isinstance(exc, EngineDeadError):
        return APIError(HTTPStatus.SERVICE_UNAVAILABLE,
                        "The inference engine died; the request was not completed.",
                        code="engine_dead")
    return engine_failure(exc)


async def guarded_outputs(
    engine: AsyncLLM,
    lifecycle: Lifecycle,
    prompt_token_ids: list[int],
    params: SamplingParams,
    request_id: str,
    *,
    queue_timeout: float,
    idle_timeout: float,
) -> AsyncIterator[RequestOutput]:
    """Yield the engine's outputs; raise APIError on timeout, termination or failure.

    The timeouts wrap only the wait for the engine, never the caller's work between outputs.
    Closing this generator (client gone) closes the engine's, which aborts the request.
    """
    outputs = engine.generate({"prompt_token_ids": prompt_token_ids}, params, request_id)
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
            except Exception as exc:  # noqa: BLE001 - every engine failure becomes an APIError
                if not isinstance(exc, (EngineDeadError, VLLMClientError, GracefulHTTPError)):
                    logger.exception("Engine request %s failed", request_id)
                raise _engine_error(exc) from exc
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
