"""Ctrl+C always ends an evaluation (evaluation/interrupt.py), even when a library swallows the
cancellation asyncio sends: the hang seen when anyio's CancelScope ate it mid-connect."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from evaluation.interrupt import REPEAT_S, run_interruptibly

# A regression here hangs rather than fails: end it as a failure.
pytestmark = pytest.mark.timeout(30, method="thread")


def press_ctrl_c(after: float) -> None:
    """SIGINT to this process from inside the running loop, once its handler is in place."""
    asyncio.get_running_loop().call_later(after, os.kill, os.getpid(), signal.SIGINT)


def test_the_result_comes_back_when_nobody_presses_ctrl_c() -> None:
    async def main() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_interruptibly(main()) == 42
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_errors_of_the_run_are_raised_as_they_are() -> None:
    async def main() -> None:
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        run_interruptibly(main())


def test_ctrl_c_ends_a_run_whose_first_cancellation_is_swallowed() -> None:
    cleaned_up = []

    async def request_that_swallows_one_cancellation() -> None:
        press_ctrl_c(after=0.05)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # what anyio#1214 does; asyncio.run hangs here
        try:
            await asyncio.sleep(60)  # a server that never answers
        finally:
            cleaned_up.append("cache closed")

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(request_that_swallows_one_cancellation())
    assert time.monotonic() - started < 10 * REPEAT_S
    assert cleaned_up == ["cache closed"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_received_by_another_thread_still_wakes_the_idle_loop() -> None:
    """The kernel may hand SIGINT to any thread (tqdm keeps one); Python runs the handler in
    the main thread only when that thread next runs, and an idle loop sleeps until its next
    timer. asyncio.run sleeps on there; a wake-up fd is what ends the run now."""
    other = threading.Thread(target=time.sleep, args=(5,), daemon=True)
    other.start()

    async def idle_until_a_timer_in_a_minute() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, signal.pthread_kill, other.ident, signal.SIGINT)
        await asyncio.sleep(60)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(idle_until_a_timer_in_a_minute())
    assert time.monotonic() - started < 10 * REPEAT_S


def test_a_second_ctrl_c_ends_a_run_that_ignores_every_cancellation(monkeypatch) -> None:
    monkeypatch.setattr("evaluation.interrupt.CLEANUP_S", 0.1)

    async def stubborn() -> None:
        press_ctrl_c(after=0.05)
        press_ctrl_c(after=3 * REPEAT_S)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(stubborn())
    assert time.monotonic() - started < 30
