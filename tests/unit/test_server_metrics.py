"""Prefix-cache counters read from Prometheus text, summed over targets, as a run's delta."""

from __future__ import annotations

from loadtests.server_metrics import (
    PREFIX_CACHE_HITS,
    PREFIX_CACHE_QUERIES,
    CounterSnapshot,
    metric_totals,
    prefix_cache_hit_rate,
)

TEXT = """\
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 500.0
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 600.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
"""


def test_counters_are_summed_over_label_sets() -> None:
    totals = metric_totals(TEXT, [PREFIX_CACHE_HITS, PREFIX_CACHE_QUERIES,
                                  "vllm:num_requests_running", "absent"])
    assert totals == {PREFIX_CACHE_HITS: 600.0, PREFIX_CACHE_QUERIES: 1500.0,
                      "vllm:num_requests_running": 3.0, "absent": 0.0}


def test_hit_rate_is_the_runs_delta() -> None:
    before = CounterSnapshot({PREFIX_CACHE_HITS: 600.0, PREFIX_CACHE_QUERIES: 1500.0})
    after = CounterSnapshot({PREFIX_CACHE_HITS: 900.0, PREFIX_CACHE_QUERIES: 1900.0})
    assert prefix_cache_hit_rate(before.delta(after)) == 0.75
    assert prefix_cache_hit_rate(before.delta(before)) is None
