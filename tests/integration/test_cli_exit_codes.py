"""Every subcommand follows one exit-status convention and reports user errors in one line.

0 ok, 1 failed work, 2 bad usage; stderr holds one `huatuo <cmd>: error: ...` line with the
fix, never a traceback. Each case runs `python -m huatuo <cmd> ...` as a subprocess. `huatuo
unify` talks to an unreachable port and to a fake OpenAI endpoint (FastAPI in a thread) instead
of a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support.threaded_server import serving_in_thread

ROOT = Path(__file__).resolve().parents[2]
PASSAGES = ROOT / "adapters" / "training" / "data" / "passages.jsonl"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def huatuo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUATUO_BENCH_API_KEY")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "huatuo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=environment)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, command: str,
                          *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"huatuo {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_argparse_error(result: subprocess.CompletedProcess, command: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]  # argparse: usage lines, then the error
    assert last.startswith(f"huatuo {command}") and ": error: " in last, last


# --- bad usage: exit 2 ------------------------------------------------------------------------

def test_train_bad_usage(tmp_path: Path) -> None:
    assert_one_line_error(huatuo("train", "--config", str(tmp_path / "none.yaml")), 2, "train",
                          "none.yaml: no such file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    assert_one_line_error(huatuo("train", "--config", str(broken)), 2, "train")
    no_data = tmp_path / "no-data.yaml"
    no_data.write_text(f"model: {{path: tiny-random}}\ndata:\n  sources:\n"
                       f"    - {{name: sft, path: {tmp_path / 'missing.json'}}}\n")
    assert_one_line_error(huatuo("train", "--config", str(no_data)), 2, "train",
                          "data source 'sft'", "missing.json: no such file")
    assert_one_line_error(huatuo("train", "--config", str(no_data), "--data.packing", "nope"),
                          2, "train", "data.packing must be bfd or greedy")
    assert_argparse_error(huatuo("train", "--no-such-flag"), "train")


def test_convert_bad_usage(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    assert_one_line_error(huatuo("convert", str(tmp_path / "nowhere"), str(dst)), 2, "convert",
                          "nowhere: no such directory")
    dst.mkdir()
    (dst / "old.txt").write_text("x")
    assert_one_line_error(huatuo("convert", str(src), str(dst)), 2, "convert", "pass --force")
    assert_one_line_error(huatuo("convert", str(src), str(src)), 2, "convert",
                          "is the source directory")
    assert_one_line_error(huatuo("convert", str(src), str(tmp_path / "o"), "--shard-size",
                                 "lots"), 2, "convert", "--shard-size")
    assert_argparse_error(huatuo("convert", str(src), str(tmp_path / "o"), "--dtype", "int3"),
                          "convert")
    # An empty source directory is not a checkpoint: the conversion fails (1), no DST.
    assert_one_line_error(huatuo("convert", str(src), str(tmp_path / "o")), 1, "convert")
    assert not (tmp_path / "o").exists()


def test_bench_bad_usage(tmp_path: Path) -> None:
    out = ["--output-dir", str(tmp_path / "bench"), "--no-plots", "--no-progress"]
    assert_one_line_error(huatuo("bench", "run", "--mode", "open", *out), 2, "bench",
                          "--mode open needs --rate")
    assert_one_line_error(huatuo("bench", "run", "--jsonl", str(tmp_path / "none.jsonl"), *out),
                          2, "bench", "none.jsonl: no such file")
    assert_one_line_error(huatuo("bench", "run", "--workload", "long", "--max-model-len", "8",
                                 *out), 2, "bench", "max_model_len 8")
    assert_argparse_error(huatuo("bench", "run", "--concurrency", "zero"), "bench")
    assert_argparse_error(huatuo("bench"), "bench")


def test_unify_bad_usage(tmp_path: Path) -> None:
    out = str(tmp_path / "u.jsonl")
    assert_one_line_error(huatuo("unify", "--input", str(tmp_path / "none.jsonl"), "--output",
                                 out), 2, "unify", "none.jsonl: no such file")
    # `--api-key "$OPENAI_API_KEY"` with the variable unset.
    assert_one_line_error(huatuo("unify", "--input", str(PASSAGES), "--output", out,
                                 "--api-key", ""), 2, "unify", "OPENAI_API_KEY")
    prompt = tmp_path / "q.txt"
    prompt.write_text("Ask about {passage}")
    assert_one_line_error(huatuo("unify", "--input", str(PASSAGES), "--output", out,
                                 "--question-prompt-file", str(prompt)), 2, "unify",
                          "bad placeholder", "{text}")
    assert_argparse_error(huatuo("unify", "--output", out), "unify")
    assert not Path(out).exists()


# --- failed work: exit 1 ----------------------------------------------------------------------

def test_unreachable_endpoints_fail_in_one_line(tmp_path: Path) -> None:
    result = huatuo("unify", "--input", str(PASSAGES), "--output", str(tmp_path / "u.jsonl"),
                    "--base-url", UNREACHABLE + "/v1", "--no-progress")
    assert_one_line_error(result, 1, "unify", "cannot reach", "--base-url")
    result = huatuo("bench", "run", "--base-url", UNREACHABLE, "--num-requests", "1",
                    "--output-dir", str(tmp_path / "bench"), "--no-plots", "--no-progress")
    assert_one_line_error(result, 1, "bench", "cannot reach", "--base-url")


# --- unify against a fake OpenAI endpoint -----------------------------------------------------

def fake_openai_app():
    """/v1/models and /v1/chat/completions; the API key picks the behaviour:
    'small' -> questions fine for half the passages (too long for the others), answers refused
    with vLLM's 400 context-length error (a --max-model-len 512 server); 'good' -> everything
    fine; anything else -> 401."""
    app = FastAPI()

    def key(request: Request) -> str:
        return request.headers.get("authorization", "").removeprefix("Bearer ")

    def refused() -> JSONResponse:
        return JSONResponse({"error": {"message": "Incorrect API key provided",
                                       "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}, status_code=401)

    @app.get("/v1/models")
    async def models(request: Request):
        if key(request) not in ("good", "small"):
            return refused()
        return {"object": "list", "data": [{"id": "fake-huatuo", "object": "model",
                                            "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if key(request) not in ("good", "small"):
            return refused()
        prompt = (await request.json())["messages"][0]["content"]
        if "<reply>" in prompt:  # the answer prompt
            if key(request) == "small":
                return JSONResponse({
                    "object": "error", "type": "BadRequestError", "param": None, "code": 400,
                    "message": "This model's maximum context length is 512 tokens. However, "
                               "you requested 731 tokens (731 in the messages, 0 in the "
                               "completion). Please reduce the length of the messages or "
                               "completion."}, status_code=400)
            content = "多休息，多喝水。"
        else:
            long = key(request) == "small" and sum(map(ord, prompt)) % 2 == 0
            content = "问" * 200 if long else "头痛怎么办？"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-huatuo",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


@pytest.fixture(scope="module")
def fake_endpoint() -> Iterator[str]:
    with serving_in_thread(fake_openai_app()) as base_url:
        yield f"{base_url}/v1"


def unify(endpoint: str, output: Path, key: str, *extra: str) -> subprocess.CompletedProcess:
    return huatuo("unify", "--input", str(PASSAGES), "--output", str(output), "--base-url",
                  endpoint, "--api-key", key, "--no-progress", "--concurrency", "4",
                  "--tries", "1", *extra)


def test_unify_small_context_fails_with_the_fix_and_a_summary(fake_endpoint: str,
                                                              tmp_path: Path) -> None:
    output = tmp_path / "unified.jsonl"
    result = unify(fake_endpoint, output, "small")
    assert_one_line_error(result, 1, "unify", "did not fit the server's context",
                          "maximum context length is 512", "--max-model-len")
    # The summary ends the output: every passage accounted for, reasons with counts.
    summary = result.stdout[result.stdout.index("unify summary:"):]
    assert "48 passages; 0 (0%) are in" in summary
    dropped = int(summary.split(" dropped,")[0].rsplit(" ", 1)[1])
    failed = int(summary.split(" failed;")[0].rsplit(" ", 1)[1])
    assert 0 < dropped < 48 and dropped + failed == 48
    assert f"{dropped:>6}  no question within 180 characters" in summary
    assert f"{failed:>6}  prompt longer than the server's context" in summary
    # No per-request HTTP log lines (httpx INFO) anywhere.
    assert "HTTP Request" not in result.stdout + result.stderr
    # Context failures are not recorded as dropped: a rerun after the fix retries them.
    lines = (tmp_path / "unified.dropped.jsonl").read_text().splitlines()
    assert len(lines) == dropped
    assert {json.loads(line)["reason"] for line in lines} == {
        "no question within 180 characters"}


def test_unify_below_the_kept_fraction_fails(fake_endpoint: str, tmp_path: Path) -> None:
    output = tmp_path / "unified.jsonl"
    # Everything is dropped by the question filter: nothing kept, exit 1 (the case).
    result = unify(fake_endpoint, output, "good", "--max-question-chars", "3")
    assert_one_line_error(result, 1, "unify", "only 0 of 48 passages (0%) were kept",
                          "--min-kept-fraction 0.5")
    assert "    48  no question within 3 characters" in result.stdout
    # A threshold of 0 accepts it; a rerun skips the dropped ids but still judges the output.
    again = unify(fake_endpoint, output, "good", "--max-question-chars", "3")
    assert again.returncode == 1 and "48 already done" in again.stdout
    assert unify(fake_endpoint, output, "good", "--min-kept-fraction", "0").returncode == 0


def test_unify_success_and_rejected_key(fake_endpoint: str, tmp_path: Path) -> None:
    output = tmp_path / "unified.jsonl"
    result = unify(fake_endpoint, output, "good")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "48 passages; 48 (100%) are in" in result.stdout
    assert len(output.read_text().splitlines()) == 48
    refused = unify(fake_endpoint, tmp_path / "other.jsonl", "wrong")
    assert_one_line_error(refused, 2, "unify", "refused the API key (HTTP 401)", "--api-key")
    # --log-level debug shows the HTTP client's request lines again.
    debug = unify(fake_endpoint, output, "good", "--log-level", "debug")
    assert debug.returncode == 0 and "HTTP Request" in debug.stderr
