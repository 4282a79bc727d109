"""Prometheus metrics of the gateway (`huatuo_*`) and their exposition next to vLLM's (`vllm:*`).

Labels are `model`, `endpoint` and, where it matters, `status` or a rejection `reason`. Every
label value comes from a small, bounded set: a model the server does not serve is counted as
"other", an unknown endpoint as "other", and a reason that is not a short code as "other". No
label ever carries request content, ids or user names (these are patients' words; and an
unbounded label would also blow up Prometheus).

Process model: single-process. `huatuo serve` runs ONE uvicorn worker that owns the in-process
vLLM engine (AsyncLLM); a second worker would load a second copy of the weights and a second
engine, so the stack scales by replicas (pods / containers), each scraped on its own. vLLM's
stat logger records its `vllm:*` metrics in this same process, in prometheus_client's default
registry. Our metrics live in their own registry so that tests and repeated app factories can
build `GatewayMetrics` more than once without "Duplicated timeseries" errors.

If an operator does set PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, read at
import time), every metric of every process, ours included, is written to that directory and
`render_metrics` exposes the merged view from vLLM's multiprocess registry instead; the in-flight
and engine-health gauges are declared with multiprocess modes that aggregate correctly.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from server.telemetry import RequestRecord, Telemetry

OTHER = "other"

# The API routes the gateway counts; /metrics and /health never reach telemetry.
GENERATION_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
ENDPOINTS = (*GENERATION_ENDPOINTS, "/v1/models")
# Admission refusals the gateway knows (server.lifecycle); pre-created so panels show 0, not
# "No data". Other short codes are accepted as they come.
KNOWN_REJECTION_REASONS = ("server_overloaded", "shutting_down", "engine_dead")
# The classic text format (0.0.4): what every Prometheus server, 2.x included, parses. (The
# client's CONTENT_TYPE_LATEST announces 1.0.0, which older servers do not know.)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

# Buckets for LLM latencies. TTFT: from a warm prefix-cache hit (ms) to a long prompt queued
# behind a full batch (tens of seconds).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
# Inter-token latency: a healthy decode step is 10-100 ms on a GPU; seconds mean starvation.
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
               0.5, 0.75, 1.0, 2.5, 5.0)
# Event-loop lag: how late a periodic timer fires. Milliseconds are normal; 100 ms stalls every
# stream and health check of the replica.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)
LOOP_LAG_INTERVAL = 0.1
# Whole requests: answers of up to 2048 tokens take minutes on a loaded 34B replica.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                    45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)


class GatewayMetrics(Telemetry):
    """Counts every API request; see docs/observability.md for what each metric means.

    `model_names`: the models this server serves (label values); anything else is "other".
    `registry`: where to register; a fresh registry by default (see the module docstring).
    """

    def __init__(
        self,
        model_names: Iterable[str] = (),
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.model_names = frozenset(model_names)
        self.endpoints = frozenset(ENDPOINTS)
        self.registry = registry if registry is not None else CollectorRegistry()
        # request key -> labels its in-flight gauge was raised with, so finish lowers the same one
        # and a finish without a start never drives the gauge negative.
        self._in_flight_labels: dict[str, tuple[str, str]] = {}
        r = self.registry
        base = ["model", "endpoint"]

        self.requests = Counter(
            "huatuo_requests", "API requests finished, by HTTP status code.",
            base + ["status"], registry=r)
        self.request_duration = Histogram(
            "huatuo_request_duration_seconds",
            "Time from arrival to the last byte sent, every request (errors included).",
            base + ["status"], buckets=DURATION_BUCKETS, registry=r)
        self.e2e_latency = Histogram(
            "huatuo_e2e_request_latency_seconds",
            "Time from arrival to the end of a generation that completed (status 200, no "
            "disconnect, no error in the stream).",
            base, buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram(
            "huatuo_time_to_first_token_seconds",
            "Time from arrival to the first generated token (queueing + prefill), as the "
            "gateway sees it.", base, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(
            "huatuo_inter_token_latency_seconds",
            "Time between successive generated tokens, one observation per token after the "
            "first.", base, buckets=ITL_BUCKETS, registry=r)
        self.prompt_tokens = Counter(
            "huatuo_prompt_tokens", "Prompt tokens of finished requests.", base, registry=r)
        self.completion_tokens = Counter(
            "huatuo_completion_tokens", "Generated tokens of finished requests.", base,
            registry=r)
        self.in_flight = Gauge(
            "huatuo_requests_in_flight", "Requests admitted and not yet finished.", base,
            multiprocess_mode="livesum", registry=r)
        self.rejections = Counter(
            "huatuo_admission_rejections",
            "Requests refused by admission control before reaching the engine, by reason.",
            base + ["reason"], registry=r)
        self.disconnects = Counter(
            "huatuo_client_disconnects",
            "Requests whose client went away before the answer ended (engine work aborted).",
            base, registry=r)
        self.stream_errors = Counter(
            "huatuo_stream_errors",
            "Streams that had started (HTTP 200) and then ended with an error chunk.", base,
            registry=r)
        self.trimmed = Counter(
            "huatuo_trimmed_conversations",
            "Conversations whose oldest turns were dropped to fit the context window.", base,
            registry=r)
        self.trimmed_turns = Counter(
            "huatuo_trimmed_turns", "Conversation turns dropped to fit the context window.",
            base, registry=r)
        self.engine_healthy = Gauge(
            "huatuo_engine_healthy",
            "1 while the in-process vLLM engine is alive and the server admits requests, 0 when "
            "the engine is dead or the server is draining.",
            multiprocess_mode="liveall", registry=r)
        self.loop_lag = Histogram(
            "huatuo_event_loop_lag_seconds",
            f"How late the gateway's event loop runs a {LOOP_LAG_INTERVAL:g} s timer: time "
            "every request, stream and health check waited behind other work.",
            buckets=LOOP_LAG_BUCKETS, registry=r)
        # Until a probe is attached (watch_engine), an unknown state reads as NaN, never as OK.
        self.engine_healthy.set(float("nan"))

        # Create the label children the dashboards and alert rules read, so they see zeros
        # instead of missing series before the first request. Histograms too: a series that
        # first appears non-zero loses its first observations to rate()/increase(), which need
        # a sample before them.
        for model in self.model_names:
            for endpoint in ENDPOINTS:
                self.requests.labels(model, endpoint, "200")
                self.request_duration.labels(model, endpoint, "200")
            for endpoint in GENERATION_ENDPOINTS:
                for family in (self.prompt_tokens, self.completion_tokens, self.in_flight,
                               self.disconnects, self.stream_errors, self.trimmed,
                               self.trimmed_turns, self.ttft, self.itl, self.e2e_latency):
                    family.labels(model, endpoint)
                for reason in KNOWN_REJECTION_REASONS:
                    self.rejections.labels(model, endpoint, reason)

    def serve_model(self, name: str) -> None:
        """A model loaded at runtime (an adapter) becomes a label value: the set stays bounded
        by what an admin loaded, never by what clients send."""
        self.model_names = self.model_names | {name}

    # -- label hygiene ---------------------------------------------------------------------------

    def _model(self, model: str) -> str:
        # Without a list of served models we cannot tell a real name from free text: count
        # everything as "other" rather than risk content in a label.
        return model if model in self.model_names else OTHER

    def _endpoint(self, endpoint: str) -> str:
        return endpoint if endpoint in self.endpoints else OTHER

    def _labels(self, record: RequestRecord) -> tuple[str, str]:
        return self._model(record.model), self._endpoint(record.endpoint)

    # -- Telemetry hooks -------------------------------------------------------------------------

    def start(self, record: RequestRecord) -> None:
        labels = self._labels(record)
        key = _in_flight_key(record)
        if key in self._in_flight_labels:
            return
        self._in_flight_labels[key] = labels
        self.in_flight.labels(*labels).inc()

    def finish(self, record: RequestRecord) -> None:
        started = self._in_flight_labels.pop(_in_flight_key(record), None)
        if started is not None:
            self.in_flight.labels(*started).dec()
        model, endpoint = self._labels(record)
        status = str(int(record.status))
        self.requests.labels(model, endpoint, status).inc()
        if record.duration is not None:
            self.request_duration.labels(model, endpoint, status).observe(record.duration)
        if record.prompt_tokens:
            self.prompt_tokens.labels(model, endpoint).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(model, endpoint).inc(record.completion_tokens)
        if record.ttft is not None:
            self.ttft.labels(model, endpoint).observe(record.ttft)
        if record.token_gaps:
            observe_many(self.itl.labels(model, endpoint), record.token_gaps)
        if record.client_disconnected:
            self.disconnects.labels(model, endpoint).inc()
        if record.stream_error:
            self.stream_errors.labels(model, endpoint).inc()
        if record.trimmed_turns > 0:
            self.trimmed.labels(model, endpoint).inc()
            self.trimmed_turns.labels(model, endpoint).inc(record.trimmed_turns)
        completed = (record.status == 200 and not record.client_disconnected
                     and not record.stream_error and not record.error_code)
        if completed and record.duration is not None and record.endpoint != "/v1/models":
            self.e2e_latency.labels(model, endpoint).observe(record.duration)

    def rejected(self, model: str, endpoint: str, reason: str) -> None:
        reason = reason if _REASON.match(reason or "") else OTHER
        self.rejections.labels(self._model(model), self._endpoint(endpoint), reason).inc()

    # -- engine health ---------------------------------------------------------------------------

    def watch_engine(self, is_healthy: Callable[[], bool]) -> None:
        """Read `is_healthy()` at every scrape into `huatuo_engine_healthy` (1 or 0)."""
        self.engine_healthy.set_function(lambda: 1.0 if is_healthy() else 0.0)


async def watch_event_loop_lag(histogram: Histogram,
                               interval: float = LOOP_LAG_INTERVAL) -> None:
    """Observe, forever, how late `asyncio.sleep(interval)` wakes up on this loop."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - started - interval))


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every value, with one increment per bucket touched instead of
    two locked increments per value: inter-token gaps come one per token, and observing them
    one by one was a visible share of the API process's CPU per request. Uses the histogram's
    own bounds and values (prometheus_client internals; tests/unit/test_metrics.py checks the
    result equals observing one by one)."""
    if not values:
        return
    bounds = histogram._upper_bounds
    for index, count in collections.Counter(bisect.bisect_left(bounds, v) for v in values).items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(math.fsum(values))


def _in_flight_key(record: RequestRecord) -> str:
    # The server-made completion id is unique; a client's X-Request-Id may repeat.
    return record.completion_id or record.request_id


def render_metrics(gateway: GatewayMetrics | None) -> tuple[bytes, str]:
    """The `/metrics` payload and its content type: our metrics, then vLLM's and the process's."""
    from vllm.v1.metrics.prometheus import get_prometheus_registry

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Multiprocess mode: every process's values, ours included, live in the directory and
        # the multiprocess collector merges them; our own registry would count them twice.
        return generate_latest(get_prometheus_registry()), CONTENT_TYPE
    payload = generate_latest(gateway.registry) if gateway is not None else b""
    # vLLM's PrometheusStatLogger registers in the default registry, with the process_* and
    # python_* collectors (CPU seconds, memory, open fds) that come with prometheus_client.
    vllm_registry = get_prometheus_registry()
    payload += generate_latest(vllm_registry if vllm_registry is not None else REGISTRY)
    return payload, CONTENT_TYPE
