"""Start, health-check, measure and stop a server process: the one process manager.

Used by `huatuo bench compare` (our server and vLLM's, side by side) and by the end-to-end
tests. Each server runs in a new session, so stopping it ends its engine-core children too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def huatuo_serve_argv(port: int, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "huatuo", "serve", "--host", "127.0.0.1", "--port", str(port),
            *args]


def vllm_router_argv(port: int, worker_urls: list[str], policy: str, prometheus_port: int,
                     args: list[str] = ()) -> list[str]:
    """vllm-router (the pinned dev dependency, installed next to this Python) in front of
    `worker_urls`; its Prometheus metrics on their own port, as the router serves them."""
    router = Path(sys.executable).with_name("vllm-router")
    return [str(router), "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
            *worker_urls, "--policy", policy, "--prometheus-host", "127.0.0.1",
            "--prometheus-port", str(prometheus_port), *args]


class ServerProcess:
    """A server child process whose output goes to `log_path`; ready when /health is 200."""

    def __init__(self, argv: list[str], log_path: Path, *, port: int,
                 env: dict[str, str] | None = None, name: str = "server",
                 cwd: Path | None = None) -> None:
        self.name = name
        self.cwd = cwd or ROOT  # another source tree runs another version (before/after)
        self.argv = argv
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self.env = env if env is not None else dict(os.environ)
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 600.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log: "
                                   f"{self.log_path}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout} s; log: {self.log_path}\n"
                           f"{self.log_tail()}")

    def start_ready(self, timeout: float = 600.0) -> ServerProcess:
        """Start and wait until healthy; a server that does not come up is stopped."""
        self.start()
        try:
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def cpu(self) -> tuple[float, float]:
        """(this process's CPU seconds, CPU seconds of its live descendants)."""
        assert self.process is not None
        pid = self.process.pid
        return _cpu_or_zero(pid), sum(_cpu_or_zero(child) for child in descendants(pid))

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a replica that crashes (failover tests)."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then end whatever is left of the process group."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # An engine core that outlived its parent goes with the group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        return self.process.returncode


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included, its children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" closing the command name, field 14 (utime) is index 11, stime index 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(pid: int) -> list[int]:
    """Live descendant pids (the engine core and its workers), via /proc/*/task/*/children."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    stack.append(child)
    return found


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return 0.0
