"""`guarded_outputs`' timeouts: one timer per request, and only the engine's waits are timed."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.errors import APIError
from server.generation import guarded_outputs
from server.lifecycle import Lifecycle


class ScriptedEngine:
    """Yields `count` outputs, each after `gaps[i]` seconds (the last gap repeats); a gap of
    None waits forever. Records whether the request was closed (aborted or finished)."""

    def __init__(self, count: int, gaps: list[float | None]) -> None:
        self.count = count
        self.gaps = gaps
        self.closed = False

    async def generate(self, prompt: dict, params, request_id: str, lora_request=None):
        assert prompt["prompt_token_ids"] == [1, 2, 3]
        try:
            for i in range(self.count):
                gap = self.gaps[min(i, len(self.gaps) - 1)]
                if gap is None:
                    await asyncio.Event().wait()
                await asyncio.sleep(gap)
                yield i
        finally:
            self.closed = True


def outputs(engine: ScriptedEngine, *, queue_timeout: float, idle_timeout: float):
    return guarded_outputs(engine, Lifecycle(8), [1, 2, 3], None, "req-1",
                           queue_timeout=queue_timeout, idle_timeout=idle_timeout)


async def collect(stream, pause: float = 0.0) -> list:
    got = []
    async for output in stream:
        got.append(output)
        await asyncio.sleep(pause)  # the caller's own work between outputs
    return got


def test_the_callers_work_between_outputs_is_never_timed() -> None:
    engine = ScriptedEngine(3, [0.0])
    got = asyncio.run(collect(outputs(engine, queue_timeout=0.05, idle_timeout=0.05),
                              pause=0.2))
    assert got == [0, 1, 2]


def test_steady_outputs_outlast_the_idle_timeout_without_expiring() -> None:
    """Each wait is short, the whole stream lasts several timeouts: the one timer must follow
    the latest deadline, not the first."""
    engine = ScriptedEngine(12, [0.03])
    got = asyncio.run(collect(outputs(engine, queue_timeout=0.1, idle_timeout=0.1)))
    assert got == list(range(12))


def test_queue_timeout_before_the_first_output() -> None:
    engine = ScriptedEngine(3, [None])
    with pytest.raises(APIError) as info:
        asyncio.run(collect(outputs(engine, queue_timeout=0.1, idle_timeout=5)))
    assert info.value.status == 503 and info.value.code == "queue_timeout"
    assert engine.closed


def test_idle_timeout_after_a_long_queue_timeout_fires_on_time() -> None:
    """The first wait arms a timer for the (long) queue timeout; the idle timeout that follows
    is shorter and must not wait for that timer."""
    engine = ScriptedEngine(3, [0.0, None])
    started = time.monotonic()
    with pytest.raises(APIError) as info:
        asyncio.run(collect(outputs(engine, queue_timeout=30, idle_timeout=0.1)))
    assert info.value.status == 504 and info.value.code == "stream_idle_timeout"
    assert time.monotonic() - started < 5
    assert engine.closed


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    engine = ScriptedEngine(3, [None])

    async def go() -> None:
        task = asyncio.ensure_future(collect(outputs(engine, queue_timeout=30, idle_timeout=30)))
        await asyncio.sleep(0.05)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())
    assert engine.closed
