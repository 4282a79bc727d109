"""What the gateway records about each request, for metrics and access logs.

The serving code fills one `RequestRecord` per request and hands it to `Telemetry.finish`
exactly once. Content (prompt, answer) is carried only when `--log-content` is on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from server.errors import APIError

CLIENT_CLOSED = 499  # nginx's "client closed request", for logs and metrics


@dataclass
class RequestRecord:
    # The client's X-Request-Id (validated) or one we made: for correlating logs.
    request_id: str
    endpoint: str  # e.g. "/v1/chat/completions"
    # The response's `id` and the engine's request id: always unique, made by the server.
    completion_id: str = ""
    model: str = ""
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds from arrival to the first generated token, when one was generated.
    ttft: float | None = None
    # Gaps between successive token batches (seconds), for inter-token latency.
    token_gaps: list[float] = field(default_factory=list)
    last_token_at: float | None = None
    duration: float | None = None
    trimmed_turns: int = 0
    client_disconnected: bool = False
    stream_error: str | None = None  # error code sent inside a 200 stream
    error_code: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    # Only filled when --log-content is on.
    prompt_text: str | None = None
    completion_text: str | None = None

    def client_gone(self) -> None:
        self.client_disconnected = True
        self.status = CLIENT_CLOSED

    def stream_failed(self, error: APIError) -> None:
        """A stream that had started (HTTP 200) ended with this error event."""
        self.stream_error = error.code or error.type

    def mark_tokens(self, count: int) -> None:
        """Called when `count` new tokens arrive from the engine."""
        now = time.perf_counter()
        if self.ttft is None:
            self.ttft = now - self.started
        elif self.last_token_at is not None and count > 0:
            # Spread a batch's gap over its tokens: the time per token seen by the client.
            gap = (now - self.last_token_at) / count
            self.token_gaps.extend([gap] * count)
        self.last_token_at = now
        self.completion_tokens += count


class Telemetry:
    """Receives finished request records. Metrics and access logs subclass or wrap it."""

    def start(self, record: RequestRecord) -> None:  # noqa: B027 - optional hook
        """A request was admitted (in-flight gauges)."""

    def finish(self, record: RequestRecord) -> None:  # noqa: B027 - optional hook
        """A request ended, in any way; `record.duration` is set."""

    def rejected(self, model: str, endpoint: str, reason: str) -> None:  # noqa: B027
        """Admission control refused a request."""


class CompositeTelemetry(Telemetry):
    """Fans every hook out to several receivers (metrics and the access log)."""

    def __init__(self, *receivers: Telemetry) -> None:
        self.receivers = receivers

    def start(self, record: RequestRecord) -> None:
        for receiver in self.receivers:
            receiver.start(record)

    def finish(self, record: RequestRecord) -> None:
        for receiver in self.receivers:
            receiver.finish(record)

    def rejected(self, model: str, endpoint: str, reason: str) -> None:
        for receiver in self.receivers:
            receiver.rejected(model, endpoint, reason)
