"""AccessLog: one JSON line per request; no prompt or answer text unless --log-content."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import pytest

from server.access_log import LOGGER_NAME, AccessLog
from server.telemetry import RequestRecord

PROMPT = "医生您好，我父亲七十岁，最近夜里胸闷气短，\n需要去急诊吗？"
ANSWER = "建议尽快到医院心内科就诊，\"胸闷\"可能与心脏有关。"


def finished_record(**fields) -> RequestRecord:
    rec = RequestRecord(
        request_id="chatcmpl-abc123", endpoint="/v1/chat/completions", model="huatuo2-7b",
        stream=True, status=200, prompt_tokens=31, completion_tokens=17, ttft=0.123456,
        duration=2.3456789, trimmed_turns=2, finish_reasons=["stop"],
        prompt_text=PROMPT, completion_text=ANSWER,
    )
    for key, val in fields.items():
        setattr(rec, key, val)
    return rec


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def restore_logger():
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]


def test_one_json_line_per_request_with_all_fields() -> None:
    out = io.StringIO()
    log = AccessLog(stream=out)
    log.finish(finished_record())
    log.finish(finished_record(request_id="chatcmpl-2", status=429, ttft=None, duration=0.001,
                               error_code="server_overloaded", stream=False))
    first, second = lines(out)

    assert first["request_id"] == "chatcmpl-abc123"
    assert first["model"] == "huatuo2-7b"
    assert first["endpoint"] == "/v1/chat/completions"
    assert first["stream"] is True
    assert first["status"] == 200
    assert first["prompt_tokens"] == 31 and first["completion_tokens"] == 17
    assert first["ttft_s"] == 0.1235 and first["duration_s"] == 2.3457
    assert first["trimmed_turns"] == 2
    assert first["client_disconnected"] is False and first["stream_error"] is None
    assert first["finish_reasons"] == ["stop"]
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert second["status"] == 429 and second["ttft_s"] is None
    assert second["error_code"] == "server_overloaded"


def test_default_lines_carry_no_prompt_or_answer_text() -> None:
    out = io.StringIO()
    AccessLog(stream=out).finish(finished_record(client_disconnected=True))
    text = out.getvalue()
    (entry,) = lines(out)
    assert "prompt_text" not in entry and "completion_text" not in entry
    for fragment in ("胸闷", "急诊", "心内科", "父亲"):
        assert fragment not in text
    assert entry["client_disconnected"] is True


def test_log_content_adds_text_and_keeps_one_line_per_request() -> None:
    out = io.StringIO()
    AccessLog(log_content=True, stream=out).finish(finished_record())
    assert len(out.getvalue().splitlines()) == 1  # the newline in the prompt is escaped
    (entry,) = lines(out)
    assert entry["prompt_text"] == PROMPT
    assert entry["completion_text"] == ANSWER
    assert "胸闷" in out.getvalue()  # readable Chinese, not \\u escapes


def test_lines_are_bare_json_and_not_repeated_by_the_root_logger(
        caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    AccessLog(stream=out)
    log = AccessLog(stream=out)  # built twice: still one handler
    with caplog.at_level(logging.INFO):
        log.finish(finished_record())
    assert len(out.getvalue().splitlines()) == 1
    assert out.getvalue().startswith("{")
    assert not [r for r in caplog.records if r.name == LOGGER_NAME]
