"""Start a real `huatuo serve` process (real vLLM engine) for end-to-end tests.

An engine start costs 25-60 s on two cores, so tests share servers: each distinct set of
arguments starts one process per test session (see `tests/conftest.py`). The process manager is
the one `huatuo bench compare` uses (`loadtests.server_process`).
"""

from __future__ import annotations

import os
from pathlib import Path

from loadtests.server_process import ROOT, ServerProcess, free_port, huatuo_serve_argv

__all__ = ["ROOT", "SERVER_MAX_MODEL_LEN", "ServerProcess", "free_port", "huatuo_server",
           "start_server"]

# Context length of the shared server (tests/conftest.py): small, so tests can overflow it
# cheaply.
SERVER_MAX_MODEL_LEN = 512


def huatuo_server(args: list[str], log_path: Path, env: dict[str, str] | None = None
                  ) -> ServerProcess:
    """A started (not yet ready) `huatuo serve` on a free port with a 1 GiB KV cache."""
    port = free_port()
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    return ServerProcess(huatuo_serve_argv(port, args), log_path, port=port, env=full_env,
                         name="huatuo serve").start()


def start_server(args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 timeout: float = 600.0) -> ServerProcess:
    server = huatuo_server(args, log_path, env)
    try:
        server.wait_ready(timeout)
    except Exception:
        server.stop()
        raise
    return server
