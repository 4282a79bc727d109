"""The pieces of `huatuo bench router` that need no server: run tags, router counters, the table."""

from __future__ import annotations

from loadtests.bench_router import long_consultations, policy_table, router_counters, tagged

ROUTER_METRICS = """\
# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{worker="http://a:1"} 7
vllm_router_processed_requests_total{worker="http://b:2"} 5
# TYPE vllm_router_retries_total counter
vllm_router_retries_total{route="/v1/chat/completions"} 2
vllm_router_retries_total{route="/v1/completions"} 1
# TYPE vllm_router_active_workers gauge
vllm_router_active_workers 2
"""


def test_tags_separate_runs_and_keep_each_consultations_prefix() -> None:
    requests = long_consultations(24, seed=0, max_tokens=16)
    a, b = tagged(requests, "run a"), tagged(requests, "run b")
    for original, x, y in zip(requests, a, b, strict=True):
        first_a, first_b = x.messages[0]["content"], y.messages[0]["content"]
        assert first_a.startswith("[run a] ") and first_b.startswith("[run b] ")
        assert first_a.removeprefix("[run a] ") == original.messages[0]["content"]
        assert x.messages[1:] == original.messages[1:]
    # Within a run, a later turn still extends the earlier turn's prompt (the cacheable prefix).
    by_conversation: dict[int, list] = {}
    for request in a:
        by_conversation.setdefault(request.conversation, []).append(request)
    turns = next(t for t in by_conversation.values() if len(t) >= 2)
    assert turns[1].prompt_text().startswith(turns[0].prompt_text().removesuffix("<答>："))


def test_router_counters_are_read_per_worker_and_summed_otherwise() -> None:
    assert router_counters(ROUTER_METRICS) == {
        "vllm_router_processed_requests{http://a:1}": 7.0,
        "vllm_router_processed_requests{http://b:2}": 5.0,
        "vllm_router_retries": 3.0,
    }


def test_policy_table_shows_percentages_and_the_split() -> None:
    table = policy_table([{"policy": "cache_aware", "hit_rate": 0.8123, "ttft_p50_ms": 12.0,
                           "ttft_p99_ms": 40.0, "request_throughput": 3.456,
                           "output_token_throughput": 55.0, "requests_per_replica": [50.0, 46.0],
                           "errors": 0}])
    assert "| cache_aware | 81.2 % | 12.0 | 40.0 | 3.46 | 55 | 50 / 46 | 0 |" in table
