"""GatewayMetrics: RequestRecords in, Prometheus exposition out (parsed, not string-matched)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import (
    CONTENT_TYPE,
    TTFT_BUCKETS,
    GatewayMetrics,
    render_metrics,
)
from server.telemetry import RequestRecord

CHAT = "/v1/chat/completions"
MODEL = "huatuo2-7b"


def samples(payload: bytes) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(payload.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(payload: bytes, name: str, **labels: str) -> float:
    return samples(payload)[(name, frozenset(labels.items()))]


def record(request_id: str = "r1", **fields) -> RequestRecord:
    defaults = dict(endpoint=CHAT, model=MODEL, status=200, duration=1.5)
    defaults.update(fields)
    return RequestRecord(request_id=request_id, **defaults)


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics([MODEL])


def test_finished_request_counts_status_tokens_and_latencies(metrics: GatewayMetrics) -> None:
    rec = record(prompt_tokens=12, completion_tokens=5, ttft=0.2,
                 token_gaps=[0.01, 0.02, 0.03, 0.04])
    metrics.start(rec)
    metrics.finish(rec)
    payload, content_type = render_metrics(metrics)
    base = dict(model=MODEL, endpoint=CHAT)

    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(payload, "huatuo_requests_total", status="200", **base) == 1
    assert value(payload, "huatuo_prompt_tokens_total", **base) == 12
    assert value(payload, "huatuo_completion_tokens_total", **base) == 5
    assert value(payload, "huatuo_time_to_first_token_seconds_count", **base) == 1
    assert value(payload, "huatuo_time_to_first_token_seconds_sum", **base) == pytest.approx(0.2)
    assert value(payload, "huatuo_time_to_first_token_seconds_bucket", le="0.15", **base) == 0
    assert value(payload, "huatuo_time_to_first_token_seconds_bucket", le="0.2", **base) == 1
    assert value(payload, "huatuo_inter_token_latency_seconds_count", **base) == 4
    assert value(payload, "huatuo_inter_token_latency_seconds_sum", **base) == pytest.approx(0.1)
    assert value(payload, "huatuo_request_duration_seconds_count", status="200", **base) == 1
    assert value(payload, "huatuo_e2e_request_latency_seconds_count", **base) == 1
    assert value(payload, "huatuo_e2e_request_latency_seconds_sum", **base) == 1.5
    assert value(payload, "huatuo_requests_in_flight", **base) == 0


def test_in_flight_rises_on_start_and_falls_on_finish(metrics: GatewayMetrics) -> None:
    first, second = record("a"), record("b")
    metrics.start(first)
    metrics.start(second)
    in_flight = dict(model=MODEL, endpoint=CHAT)
    assert value(render_metrics(metrics)[0], "huatuo_requests_in_flight", **in_flight) == 2
    metrics.finish(first)
    assert value(render_metrics(metrics)[0], "huatuo_requests_in_flight", **in_flight) == 1
    # A finish without a start (refused before admission) and a second finish change nothing.
    metrics.finish(record("never-started"))
    metrics.finish(first)
    assert value(render_metrics(metrics)[0], "huatuo_requests_in_flight", **in_flight) == 1
    metrics.finish(second)
    assert value(render_metrics(metrics)[0], "huatuo_requests_in_flight", **in_flight) == 0


def test_failures_disconnects_stream_errors_and_trimming(metrics: GatewayMetrics) -> None:
    metrics.finish(record("bad", status=400, error_code="context_length_exceeded"))
    metrics.finish(record("gone", client_disconnected=True, completion_tokens=3))
    metrics.finish(record("broke", stream=True, stream_error="engine_dead"))
    metrics.finish(record("long", trimmed_turns=3))
    metrics.finish(record("longer", trimmed_turns=2))
    payload = render_metrics(metrics)[0]
    base = dict(model=MODEL, endpoint=CHAT)

    assert value(payload, "huatuo_requests_total", status="400", **base) == 1
    assert value(payload, "huatuo_requests_total", status="200", **base) == 4
    assert value(payload, "huatuo_client_disconnects_total", **base) == 1
    assert value(payload, "huatuo_stream_errors_total", **base) == 1
    assert value(payload, "huatuo_trimmed_conversations_total", **base) == 2
    assert value(payload, "huatuo_trimmed_turns_total", **base) == 5
    # Only the two trimmed requests completed cleanly: errors, disconnects and broken streams
    # stay out of the end-to-end latency of answers.
    assert value(payload, "huatuo_e2e_request_latency_seconds_count", **base) == 2
    assert value(payload, "huatuo_request_duration_seconds_count", status="400", **base) == 1


def test_rejections_are_counted_by_bounded_reason(metrics: GatewayMetrics) -> None:
    metrics.rejected(MODEL, CHAT, "server_overloaded")
    metrics.rejected(MODEL, CHAT, "server_overloaded")
    metrics.rejected(MODEL, CHAT, "Too many requests from Mr. Wang about his liver")
    payload = render_metrics(metrics)[0]
    base = dict(model=MODEL, endpoint=CHAT)
    assert value(payload, "huatuo_admission_rejections_total", reason="server_overloaded",
                 **base) == 2
    assert value(payload, "huatuo_admission_rejections_total", reason="other", **base) == 1


def test_label_values_never_carry_client_text(metrics: GatewayMetrics) -> None:
    """A client-chosen model name or path must not become a label value (content, cardinality)."""
    secret = "我最近胸口疼，是不是心脏病"
    metrics.finish(record("x", model=secret, endpoint="/v1/chat/completions?q=" + secret))
    metrics.rejected(secret, CHAT, "server_overloaded")
    payload = render_metrics(metrics)[0]
    assert secret not in payload.decode()
    assert value(payload, "huatuo_requests_total", model="other", endpoint="other",
                 status="200") == 1
    label_names = {name for (_, labels) in samples(payload) for name, _ in labels}
    # Only our bounded labels, plus those of vLLM's and the process collectors' own metrics.
    ours = {name for (sample, labels) in samples(payload) if sample.startswith("huatuo_")
            for name, _ in labels}
    assert ours <= {"model", "endpoint", "status", "reason", "le"}
    assert label_names  # the exposition was parsed at all


def test_known_series_exist_before_the_first_request(metrics: GatewayMetrics) -> None:
    """Zeros, not missing series: dashboards show 0 and `rate()` works from the first scrape."""
    payload = render_metrics(metrics)[0]
    base = dict(model=MODEL, endpoint=CHAT)
    for name in ("huatuo_prompt_tokens_total", "huatuo_completion_tokens_total",
                 "huatuo_client_disconnects_total", "huatuo_stream_errors_total",
                 "huatuo_trimmed_conversations_total", "huatuo_requests_in_flight"):
        assert value(payload, name, **base) == 0, name
    assert value(payload, "huatuo_requests_total", status="200", **base) == 0
    assert value(payload, "huatuo_admission_rejections_total", reason="engine_dead", **base) == 0
    for name in ("huatuo_time_to_first_token_seconds", "huatuo_inter_token_latency_seconds",
                 "huatuo_e2e_request_latency_seconds"):
        assert value(payload, name + "_count", **base) == 0, name
        assert value(payload, name + "_bucket", le="+Inf", **base) == 0, name
    assert value(payload, "huatuo_request_duration_seconds_count", status="200", **base) == 0


def test_engine_health_is_unknown_until_watched_then_follows_the_probe(
        metrics: GatewayMetrics) -> None:
    assert math.isnan(value(render_metrics(metrics)[0], "huatuo_engine_healthy"))
    state = {"alive": True}
    metrics.watch_engine(lambda: state["alive"])
    assert value(render_metrics(metrics)[0], "huatuo_engine_healthy") == 1
    state["alive"] = False
    assert value(render_metrics(metrics)[0], "huatuo_engine_healthy") == 0


def test_exposition_includes_the_default_registry_where_vllm_registers() -> None:
    """vLLM's stat logger registers `vllm:*` in prometheus_client's default registry (single-
    process mode): whatever is there must come out of the same /metrics payload."""
    from prometheus_client import REGISTRY

    stand_in = Counter("vllm:test_stand_in", "A vllm:* metric in the default registry.",
                       ["model_name"], registry=REGISTRY)
    try:
        stand_in.labels("m").inc(3)
        gateway = GatewayMetrics([MODEL])
        payload, _ = render_metrics(gateway)
        assert value(payload, "vllm:test_stand_in_total", model_name="m") == 3
        assert ("huatuo_requests_total",
                frozenset(dict(model=MODEL, endpoint=CHAT, status="200").items())
                ) in samples(payload)
        assert gateway.registry is not REGISTRY
    finally:
        REGISTRY.unregister(stand_in)


def test_two_instances_do_not_collide() -> None:
    """App factories and tests build GatewayMetrics repeatedly in one process."""
    first, second = GatewayMetrics([MODEL]), GatewayMetrics([MODEL])
    first.finish(record("a"))
    assert value(render_metrics(first)[0], "huatuo_requests_total", model=MODEL,
                 endpoint=CHAT, status="200") == 1
    assert value(render_metrics(second)[0], "huatuo_requests_total", model=MODEL,
                 endpoint=CHAT, status="200") == 0


def test_an_explicit_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics([MODEL], registry=registry)
    metrics.finish(record())
    assert registry.get_sample_value(
        "huatuo_requests_total", dict(model=MODEL, endpoint=CHAT, status="200")) == 1


def test_ttft_buckets_suit_llm_latencies() -> None:
    assert list(TTFT_BUCKETS) == sorted(TTFT_BUCKETS)
    assert TTFT_BUCKETS[0] <= 0.01 and TTFT_BUCKETS[-1] >= 60
    assert CONTENT_TYPE.startswith("text/plain")


def test_inter_token_gaps_are_per_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """n=2 streams interleave their choices: a gap is between two tokens of ONE choice."""
    clock = iter([10.1, 10.101, 10.3, 10.301])
    monkeypatch.setattr("server.telemetry.time.perf_counter", lambda: next(clock))
    rec = RequestRecord(request_id="r", endpoint=CHAT, started=10.0)
    rec.tokens_streamed(0, 1)  # 10.1: first token
    rec.tokens_streamed(1, 1)  # 10.101
    rec.tokens_streamed(0, 1)  # 10.3: 0.2 after choice 0's first
    rec.tokens_streamed(1, 1)  # 10.301: 0.2 after choice 1's first
    assert rec.ttft == pytest.approx(0.1)
    assert rec.token_gaps == pytest.approx([0.2, 0.2])
    assert rec.completion_tokens == 4


def test_non_streamed_ttft_is_the_engines_first_token_not_the_whole_answer() -> None:
    from vllm.v1.metrics.stats import RequestStateStats

    rec = RequestRecord(request_id="r", endpoint=CHAT)
    stats = RequestStateStats(arrival_time=rec.started_wall + 0.05, first_token_latency=0.3)
    rec.tokens_finished(200, stats)
    rec.tokens_finished(180, stats)  # a second choice: same first token time
    assert rec.ttft == pytest.approx(0.35)
    assert rec.token_gaps == []  # no inter-token latency is observable without a stream
    assert rec.completion_tokens == 380
    unknown = RequestRecord(request_id="r", endpoint=CHAT)
    unknown.tokens_finished(10, None)
    assert unknown.ttft is None


def test_observe_many_equals_observing_one_by_one() -> None:
    """The batched ITL observation gives the exposition one observe() per value gives,
    boundaries (a value equal to a bucket's bound) and the +Inf bucket included."""
    from prometheus_client import Histogram

    from server.metrics import observe_many

    values = [0.0, 0.001, 0.0049, 0.005, 0.0051, 0.2, 0.2, 3.0, 1e9, 0.05]
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.005, 0.05, 0.2, 1.0)
    single = Histogram("itl", "gaps", ["model"], buckets=buckets, registry=one)
    batched = Histogram("itl", "gaps", ["model"], buckets=buckets, registry=many)
    for value in values:
        single.labels("m").observe(value)
    observe_many(batched.labels("m"), values)
    observe_many(batched.labels("m"), [])
    from prometheus_client import generate_latest

    def without_created(payload: bytes) -> dict:
        return {k: v for k, v in samples(payload).items() if not k[0].endswith("_created")}

    assert without_created(generate_latest(many)) == without_created(generate_latest(one))
