"""Run an evaluation's event loop so that Ctrl+C always ends it.

`asyncio.run` answers Ctrl+C by cancelling the main task once. A library may swallow that one
cancellation: anyio's `CancelScope` does when it lands while httpx is opening a connection
(agronholm/anyio#1214), and the request then goes on to wait for a server that may never
answer. And with no wake-up fd, a SIGINT that the kernel hands to another thread (tqdm keeps
one) leaves an idle loop asleep until its next timer. Here the handler is the loop's own
(`add_signal_handler`, which sets a wake-up fd); Ctrl+C cancels every task, and again every
`REPEAT_S` until the main one has ended; a second Ctrl+C stops at once. Either way the caller
gets `KeyboardInterrupt`, and what the tasks' `finally` blocks save (the answer cache) is
saved.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

REPEAT_S = 0.5
# After Ctrl+C, how long the tasks still running may take to finish their cleanup.
CLEANUP_S = 5.0


def run_interruptibly(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, whose Ctrl+C raises `KeyboardInterrupt` however the tasks react."""
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(main)  # signals reach the main thread only
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    presses = 0
    repeat: asyncio.TimerHandle | None = None

    def cancel_until_done() -> None:
        nonlocal repeat
        if not task.done():
            for pending in asyncio.all_tasks(loop):
                pending.cancel()
            repeat = loop.call_later(REPEAT_S, cancel_until_done)

    def on_ctrl_c() -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt  # out of run_until_complete: the loop's callbacks let it
        cancel_until_done()

    loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if presses:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if repeat is not None:
            repeat.cancel()
        _finish(loop)


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left and give it `CLEANUP_S` to end, then close the loop regardless."""
    leftover = asyncio.all_tasks(loop)
    for pending in leftover:
        pending.cancel()
    if leftover:
        _, stuck = loop.run_until_complete(asyncio.wait(leftover, timeout=CLEANUP_S))
        for task in stuck:  # abandoned on purpose after a second Ctrl+C: no warning at exit
            task._log_destroy_pending = False  # type: ignore[attr-defined]
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    asyncio.set_event_loop(None)
    loop.close()
