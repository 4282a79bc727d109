"""The timed client of `huatuo bench` over real HTTP, against a local aiohttp server that plays
scripted responses: each test names its script in the URL (`http://127.0.0.1:PORT/<script>`).

The scripts write their bytes as a server would, one `write` at a time, pausing between writes
so that the client reads them separately: events cut mid-line, several events in one write,
keep-alive comments, `\\r\\n` line endings, errors before and after the 200 status line.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from loadtests import client as client_module
from loadtests.client import BenchClient, RequestResult, SamplingOptions
from loadtests.runner import run_load
from loadtests.workloads import BenchRequest

REQUEST = BenchRequest([{"role": "user", "content": "头痛怎么办？"}], max_tokens=3)
PAUSE = 0.05  # between writes the client must read apart; ITL gaps are at least this


def _event(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def _delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}}
ENGINE_DIED = {"error": {"message": "engine died", "type": "server_error", "param": None,
                         "code": None}}

# Each script: the writes of a 200 `text/event-stream` body, None for a pause of PAUSE.
Writes = list[bytes | None]
SCRIPTS: dict[str, Writes] = {
    "ok": [_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
           _event(_delta("多")), None, _event(_delta("")), _event(_delta("休息")), None,
           _event(_delta("。", "length")), _event(USAGE), _event("[DONE]"),
           None],  # the body's end comes apart from [DONE]
    "no_usage": [_event(_delta("a")), _event(_delta("b")), _event("[DONE]")],
    # Cut inside `data:`, inside the JSON, between the two newlines of an event's end and
    # between the `\r` and `\n` of a line end; then two events, a comment and the end in one
    # write.
    "split": [b": ping\n\nda", None, b"ta: " + _event(_delta("多"))[6:20], None,
              _event(_delta("多"))[20:-1], None, b"\n", None,
              b"data:" + _event(_delta("休"))[6:-2] + b"\r", None, b"\n\r\n", None,
              _event(_delta("息")) + b": ping\n\n" + _event(_delta("。")) + _event(USAGE)
              + _event("[DONE]")],
    "crlf": [_event(_delta("多")).replace(b"\n", b"\r\n"), None,
             ': ping\r\n\r\ndata: {"choices": [{"index": 0,\r\ndata: "delta": '
             '{"content": "休息"}}]}\r\n\r\n'.encode(),
             _event("[DONE]").replace(b"\n", b"\r\n")],
    "error_chunk": [_event(_delta("a")), _event(ENGINE_DIED), _event("[DONE]")],
    "truncated": [_event(_delta("a"))],
    "garbage": [b"data: {not json\n\n"],
    "not_an_object": [b"data: [1, 2]\n\n", _event("[DONE]")],
    "done_without_blank_line": [_event(_delta("a")), b"data: [DONE]"],
}


@dataclass
class Scripted:
    """The server's side: what it received and from which client port."""

    base_url: str
    bodies: dict[str, dict] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    peer_ports: list[int] = field(default_factory=list)

    def url(self, script: str) -> str:
        return f"{self.base_url}/{script}"


def _app(seen: Scripted) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        script = request.match_info["script"]
        seen.bodies[script] = await request.json()
        seen.headers[script] = dict(request.headers)
        seen.peer_ports.append(request.transport.get_extra_info("peername")[1])
        if script == "rejected":
            return web.json_response({"error": {"message": "bad", "type": "invalid"}},
                                     status=400)
        if script == "plain":
            return web.json_response({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "多休息"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if script in ("stalled", "dropped", "never_ends"):
            await response.write(_event(_delta("a")))
            if script == "dropped":
                request.transport.close()  # the server died mid-answer
                return response
            if script == "never_ends":
                await response.write(_event("[DONE]"))
            await asyncio.sleep(5)
            return response
        for write in SCRIPTS[script]:
            if write is None:
                await asyncio.sleep(PAUSE)
            else:
                await response.write(write)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{script}/v1/chat/completions", handle)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Scripted]:
    """The scripted server on 127.0.0.1 (random port), in a thread with its own loop."""
    loop = asyncio.new_event_loop()
    seen = Scripted("")
    runner = web.AppRunner(_app(seen), shutdown_timeout=0.1)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        seen.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    yield seen

    async def stop() -> None:
        await runner.cleanup()
        # The stalled scripts' handlers are still asleep: end them.
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def _with_client(base_url: str, use: Callable[[BenchClient], Awaitable[object]],
                 **kwargs) -> object:
    async def go() -> object:
        client = BenchClient(base_url, "m", **kwargs)
        try:
            return await use(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


def _send(base_url: str, **kwargs) -> RequestResult:
    return _with_client(base_url, lambda client: client.send(REQUEST), **kwargs)


def test_stream_is_timed_and_usage_wins_over_chunk_count(server: Scripted) -> None:
    result = _send(server.url("ok"), api_key="sk-test",
                   sampling=SamplingOptions(temperature=0.0, extra_body={"top_k": 1}))
    assert result.ok and result.error is None and result.status == 200
    assert result.chunks == 3  # role-only and empty deltas carry no text
    assert len(result.itl) == 2
    # Timestamps are taken when the bytes arrive: each pause is in the gap that follows it.
    assert result.itl[0] >= PAUSE * 0.9 and result.itl[1] >= PAUSE * 0.9
    assert result.output_tokens == 4 and result.prompt_tokens == 12 and result.usage_reported
    assert result.text == "多休息。" and result.finish_reason == "length"
    assert result.ttft is not None and 0 <= result.ttft <= result.e2e
    assert result.e2e >= result.ttft + sum(result.itl)
    seen = server.bodies["ok"]
    assert seen["stream"] is True and seen["stream_options"] == {"include_usage": True}
    assert seen["max_tokens"] == 3 and seen["temperature"] == 0.0 and seen["top_k"] == 1
    assert seen["messages"] == REQUEST.messages and seen["model"] == "m"
    assert "top_p" not in seen  # unset sampling fields leave the server's defaults
    assert server.headers["ok"]["Authorization"] == "Bearer sk-test"
    assert "X-Session-ID" not in server.headers["ok"]


def test_session_header_names_the_consultation(server: Scripted) -> None:
    assert _send(server.url("no_usage"), session_header=True).ok
    assert server.headers["no_usage"]["X-Session-ID"] == "consultation-0"


def test_without_usage_the_chunks_are_counted(server: Scripted) -> None:
    result = _send(server.url("no_usage"))
    assert result.ok and result.output_tokens == 2 and not result.usage_reported
    assert result.text == "ab"


def test_events_cut_anywhere_across_reads_are_reassembled(server: Scripted) -> None:
    result = _send(server.url("split"))
    assert result.ok, result.error_message
    assert result.text == "多休息。" and result.chunks == 4
    assert result.output_tokens == 4 and result.usage_reported
    # Events are timed when their last byte arrives: `多` two pauses after its first bytes,
    # `休` two pauses after `多` (its `\r` and its `\n` one pause apart).
    assert result.ttft >= 3 * PAUSE * 0.9
    assert result.itl[0] >= 2 * PAUSE * 0.9
    assert result.itl[2] == 0.0  # `。` came in the same read as `息`


def test_crlf_line_ends_and_multi_line_data(server: Scripted) -> None:
    result = _send(server.url("crlf"))
    assert result.ok, result.error_message
    assert result.text == "多休息" and result.chunks == 2


def test_done_without_its_blank_line_still_ends_the_stream(server: Scripted) -> None:
    result = _send(server.url("done_without_blank_line"))
    assert result.ok and result.text == "a"


def test_error_chunk_inside_a_200_stream_is_an_error(server: Scripted) -> None:
    result = _send(server.url("error_chunk"))
    assert not result.ok
    assert result.status == 200
    assert result.error == "stream_error" and "engine died" in result.error_message


def test_stream_cut_before_done_is_an_error(server: Scripted) -> None:
    result = _send(server.url("truncated"))
    assert not result.ok and result.error == "stream_truncated"


def test_connection_dropped_mid_stream_is_a_connection_error(server: Scripted) -> None:
    result = _send(server.url("dropped"))
    assert not result.ok and result.error == "connection"


def test_http_errors_and_connection_failures(server: Scripted) -> None:
    result = _send(server.url("rejected"))
    assert not result.ok and result.error == "http_400" and result.status == 400
    assert json.loads(result.error_message)["error"]["message"] == "bad"

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _send(f"http://127.0.0.1:{port}")
    assert not result.ok and result.error == "connection" and result.status is None

    assert _send(server.url("garbage")).error == "bad_response"
    assert _send(server.url("not_an_object")).error == "bad_response"


def test_a_stalled_stream_times_out(server: Scripted) -> None:
    result = _send(server.url("stalled"), timeout=0.5)
    assert not result.ok and result.error == "timeout"
    assert result.chunks == 1 and 0.5 <= result.e2e < 3


def test_done_ends_the_answer_even_if_the_body_never_ends(
        server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "_DRAIN_TIMEOUT", 0.5)
    start = time.perf_counter()
    result = _send(server.url("never_ends"))
    wall = time.perf_counter() - start
    assert result.ok and result.text == "a"
    # Timed at [DONE], not after the wait for the body's end (given up after 0.5 s).
    assert wall >= 0.5 and result.e2e < wall - 0.4


def test_connections_are_reused(server: Scripted) -> None:
    async def three(client: BenchClient) -> list[RequestResult]:
        return [await client.send(REQUEST) for _ in range(3)]

    before = len(server.peer_ports)
    results = _with_client(server.url("ok"), three)
    assert all(r.ok for r in results)
    # The body is read to its end (a pause after [DONE]), so the connection goes back to the
    # pool instead of being closed.
    assert len(set(server.peer_ports[before:])) == 1


def test_non_streaming_reads_usage(server: Scripted) -> None:
    result = _send(server.url("plain"), stream=False)
    assert server.bodies["plain"]["stream"] is False
    assert "stream_options" not in server.bodies["plain"]
    assert result.ok and result.output_tokens == 2 and result.ttft is None
    assert result.text == "多休息" and result.finish_reason == "stop"
    assert result.tpot == result.e2e / 2


def test_the_load_generator_runs_on_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_load(loop_module()).startswith("uvloop")
