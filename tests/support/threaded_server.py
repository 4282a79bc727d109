"""Serve an ASGI app with uvicorn in a thread, for tests that need a real HTTP endpoint that
starts in a fraction of a second (fake OpenAI servers, the gateway over a fake engine)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from loadtests.server_process import free_port


@contextlib.contextmanager
def serving_in_thread(app, port: int | None = None) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT`) while `app` serves; stop it after."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the in-thread server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
