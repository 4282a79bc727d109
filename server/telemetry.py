"""What the gateway records about each request, for metrics and access logs.

The serving code fills one `RequestRecord` per request and hands it to `Telemetry.finish`
exactly once. Content (prompt, answer) is carried only when `--log-content` is on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.errors import APIError

if TYPE_CHECKING:
    from vllm.v1.metrics.stats import RequestStateStats

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
    # Gaps between successive tokens of a choice (seconds), for inter-token latency.
    token_gaps: list[float] = field(default_factory=list)
    _last_token_at: dict[int, float] = field(default_factory=dict)
    # Wall-clock arrival, to compare with the engine's own (wall-clock) timestamps.
    started_wall: float = field(default_factory=time.time)
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

    def tokens_streamed(self, choice: int, count: int) -> None:
        """`count` new tokens of choice `choice` arrived from the engine, as they are sent.

        TTFT is the first token of any choice; inter-token gaps are measured per choice (the
        choices of n>1 interleave, and their gaps to each other mean nothing)."""
        now = time.perf_counter()
        self.completion_tokens += count
        if count <= 0:
            return
        if self.ttft is None:
            self.ttft = now - self.started
        last = self._last_token_at.get(choice)
        if last is not None:
            # Spread a batch's gap over its tokens: the time per token seen by the client.
            self.token_gaps.extend([(now - last) / count] * count)
        self._last_token_at[choice] = now

    def tokens_finished(self, count: int, engine_stats: RequestStateStats | None) -> None:
        """A non-streamed choice's `count` tokens, all at once. Its TTFT is the engine's own
        (time to its first token, from its stats), counted from this request's arrival."""
        self.completion_tokens += count
        if self.ttft is None and engine_stats is not None and engine_stats.first_token_latency:
            queued_before_engine = engine_stats.arrival_time - self.started_wall
            self.ttft = max(0.0, queued_before_engine) + engine_stats.first_token_latency


def record_of(scope: dict) -> RequestRecord | None:
    """The record of an API request, made by the telemetry middleware (None elsewhere)."""
    return scope.get("state", {}).get("record")


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
