"""The shared server-process manager: start, health wait, CPU accounting, stop."""

from __future__ import annotations

import os
import sys
import textwrap
import time

from loadtests.server_process import ServerProcess, cpu_seconds, descendants, free_port

# A stand-in server: answers 200 everywhere and has one busy child (like an engine core).
_FAKE_SERVER = textwrap.dedent("""
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: sum(range(10**5))"])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def test_cpu_seconds_of_this_process_grows() -> None:
    before = cpu_seconds(os.getpid())
    sum(range(3 * 10**6))
    assert cpu_seconds(os.getpid()) > before


def test_managed_server_lifecycle_and_child_cpu(tmp_path) -> None:
    port = free_port()
    server = ServerProcess([sys.executable, "-c", _FAKE_SERVER, str(port)], tmp_path / "fake.log",
                           port=port, name="fake")
    server.start_ready(timeout=60)
    try:
        pid = server.process.pid
        children = descendants(pid)
        assert len(children) == 1
        api0, engine0 = server.cpu()
        # The busy child's CPU is counted apart from the (idle) API process's own.
        api, engine = api0, engine0
        while engine - engine0 < 0.3:
            api, engine = server.cpu()
        assert api - api0 < 0.1
    finally:
        server.stop()
    assert server.process.poll() is not None
    # The child went with its group (SIGKILL lands asynchronously: poll a little).
    for _ in range(100):
        if _is_zombie_or_gone(children[0]):
            break
        time.sleep(0.1)
    assert _is_zombie_or_gone(children[0])


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
