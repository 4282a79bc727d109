"""Admission, in-flight tracking, graceful drain and engine death: the server's life cycle.

- Admission: at most `max_concurrent_requests` requests are admitted (running + waiting in the
  engine); the next one gets 429 with Retry-After at once, it never queues unbounded.
- Drain (SIGTERM): health turns 503, new requests get 503, requests in flight may finish until
  the deadline; then the engine requests still running are aborted and their streams end with an
  error chunk and [DONE].
- Engine death: the watchdog notices, fails what is in flight, and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from server.errors import APIError

logger = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, max_concurrent_requests: int) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self.in_flight: set[str] = set()
        self.draining = False
        self.engine_dead = False
        # Engine requests ended by the server itself, and the error their clients get.
        self._terminated: dict[str, APIError] = {}
        # Admitted request -> its engine requests, when it has several (a batch of prompts).
        self._engine_ids: dict[str, list[str]] = {}
        self._admitted_by_engine_id: dict[str, str] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def healthy(self) -> bool:
        return not (self.draining or self.engine_dead)

    def admit(self, request_id: str) -> None:
        """Admit a request or raise the error its client gets."""
        if self.engine_dead:
            raise APIError(HTTPStatus.SERVICE_UNAVAILABLE, "The inference engine is down.",
                           code="engine_dead")
        if self.draining:
            raise APIError(HTTPStatus.SERVICE_UNAVAILABLE,
                           "The server is shutting down; retry on another replica.",
                           code="shutting_down", headers={"Retry-After": "1"})
        if len(self.in_flight) >= self.max_concurrent_requests:
            raise APIError(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"Too many requests: {self.max_concurrent_requests} are already being served "
                "(--max-concurrent-requests). Retry later.",
                code="server_overloaded", headers={"Retry-After": "1"},
            )
        self.in_flight.add(request_id)
        self._idle.clear()

    def track(self, request_id: str, engine_ids: list[str]) -> None:
        """The engine requests an admitted request runs under other ids: aborted with it."""
        self._engine_ids[request_id] = list(engine_ids)
        for engine_id in engine_ids:
            self._admitted_by_engine_id[engine_id] = request_id

    def release(self, request_id: str) -> None:
        self.in_flight.discard(request_id)
        self._terminated.pop(request_id, None)
        for engine_id in self._engine_ids.pop(request_id, ()):
            self._admitted_by_engine_id.pop(engine_id, None)
        if not self.in_flight:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def termination(self, request_id: str) -> APIError | None:
        """The error to send when the server itself ended this request, else None."""
        return self._terminated.get(self._admitted_by_engine_id.get(request_id, request_id))

    async def drain(self, timeout: float, abort: Callable[[list[str]], Awaitable[None]]) -> None:
        """Let requests in flight finish for `timeout` seconds, then abort the rest."""
        self.draining = True
        logger.info("Draining: %d request(s) in flight, %.0f s to finish.",
                    len(self.in_flight), timeout)
        if await self.wait_idle(timeout):
            return
        await self.terminate_all(
            APIError(HTTPStatus.SERVICE_UNAVAILABLE,
                     "The server shut down before this request finished "
                     "(--shutdown-timeout reached).", code="shutting_down"),
            abort,
        )
        # Give the aborted streams a moment to send their error chunk and [DONE].
        if not await self.wait_idle(5.0):
            logger.warning("%d request(s) did not end after abort.", len(self.in_flight))

    async def terminate_all(
        self, error: APIError, abort: Callable[[list[str]], Awaitable[None]]
    ) -> None:
        ids = list(self.in_flight)
        if not ids:
            return
        logger.warning("Ending %d request(s) in flight: %s", len(ids), error.code)
        for request_id in ids:
            self._terminated[request_id] = error
        await abort([engine_id for request_id in ids
                     for engine_id in self._engine_ids.get(request_id, [request_id])])
