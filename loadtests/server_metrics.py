"""Read a server's Prometheus `/metrics` around a benchmark run: prefix-cache hits and the like.

The engine's counters are cumulative, so a run's figure is the difference between a scrape
before and one after (`CounterSnapshot.delta`). Several targets (replicas behind a router) are
summed, which gives the fleet's hit rate for the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

PREFIX_CACHE_HITS = "vllm:prefix_cache_hits"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries"


def metric_totals(text: str, names: Iterable[str]) -> dict[str, float]:
    """Each named metric summed over its label sets. Counters are named without `_total`
    (vLLM's `vllm:prefix_cache_hits` is exposed as `vllm:prefix_cache_hits_total`)."""
    wanted = set(names)
    totals = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in wanted:
                totals[name] += sample.value
    return totals


async def scrape(client: httpx.AsyncClient, base_url: str, names: Iterable[str],
                 api_key: str | None = None) -> dict[str, float]:
    """GET `<base_url>/metrics` (the server root, not `/v1`) and sum the named metrics."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = await client.get(f"{base_url.rstrip('/').removesuffix('/v1')}/metrics",
                                headers=headers)
    response.raise_for_status()
    return metric_totals(response.text, names)


@dataclass(frozen=True)
class CounterSnapshot:
    values: dict[str, float]

    def delta(self, later: CounterSnapshot) -> dict[str, float]:
        return {k: later.values.get(k, 0.0) - v for k, v in self.values.items()}


async def snapshot(base_urls: Sequence[str], names: Sequence[str] = (PREFIX_CACHE_HITS,
                   PREFIX_CACHE_QUERIES), api_key: str | None = None,
                   timeout: float = 10.0) -> CounterSnapshot:
    """The named counters summed over every target."""
    totals = dict.fromkeys(names, 0.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        for url in base_urls:
            for name, value in (await scrape(client, url, names, api_key)).items():
                totals[name] += value
    return CounterSnapshot(totals)


def prefix_cache_hit_rate(delta: dict[str, float]) -> float | None:
    """Hit tokens over queried tokens during the run; None when nothing was queried."""
    queries = delta.get(PREFIX_CACHE_QUERIES, 0.0)
    return delta.get(PREFIX_CACHE_HITS, 0.0) / queries if queries > 0 else None
