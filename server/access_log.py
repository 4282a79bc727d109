"""Access log: one JSON object per line per API request, on the logger `huatuo.access`.

The default line holds no prompt or answer text: these are patients' words, and log pipelines
(files, journald, Loki, support tickets) keep and copy them far beyond the request's life. Text
is added only with `--log-content` (`AccessLog(log_content=True)`), for debugging a model on
data that may be logged.

Lines go to stderr through a handler of their own with a bare `%(message)s` format, so every
line is valid JSON (the process's human log format would prefix a timestamp), and they do not
propagate to the root logger (which would print them a second time).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from server.telemetry import RequestRecord, Telemetry

LOGGER_NAME = "huatuo.access"


class _JSONLineHandler(logging.StreamHandler):
    """Marks the handler this module installed, so building AccessLog twice does not double."""


def _round(value: float | None) -> float | None:
    # Milliseconds are the useful precision; more digits only make lines longer.
    return None if value is None else round(value, 4)


class AccessLog(Telemetry):
    def __init__(self, log_content: bool = False, stream: IO[str] | None = None) -> None:
        self.log_content = log_content
        self.logger = logging.getLogger(LOGGER_NAME)
        for handler in list(self.logger.handlers):
            if isinstance(handler, _JSONLineHandler):
                self.logger.removeHandler(handler)
        handler = _JSONLineHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

    def entry(self, record: RequestRecord) -> dict[str, Any]:
        """The fields of one access-log line."""
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": record.request_id,
            "completion_id": record.completion_id or None,
            "model": record.model,
            "endpoint": record.endpoint,
            "stream": record.stream,
            "status": record.status,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "ttft_s": _round(record.ttft),
            "duration_s": _round(record.duration),
            "trimmed_turns": record.trimmed_turns,
            "client_disconnected": record.client_disconnected,
            "stream_error": record.stream_error,
            "error_code": record.error_code,
            "finish_reasons": list(record.finish_reasons),
        }
        if self.log_content:
            entry["prompt_text"] = record.prompt_text
            entry["completion_text"] = record.completion_text
        return entry

    def finish(self, record: RequestRecord) -> None:
        # ensure_ascii=False keeps Chinese readable when --log-content is on; every line is
        # still one line because json escapes newlines inside strings.
        self.logger.info(json.dumps(self.entry(record), ensure_ascii=False))
