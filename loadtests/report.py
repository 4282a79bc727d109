"""Statistics of a run: latency percentiles, throughput, goodput under SLOs, errors; JSON out.

Latencies are reported in milliseconds. Percentiles use linear interpolation (numpy's default),
over successful requests only; errors are counted by kind.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loadtests.client import RequestResult
from loadtests.runner import RunResult
from loadtests.server_metrics import (
    PREFIX_CACHE_HITS,
    PREFIX_CACHE_QUERIES,
    prefix_cache_hit_rate,
)

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "itl", "tpot", "e2e")


@dataclass(frozen=True)
class Slo:
    """Per-request targets in milliseconds; a request is 'good' when it meets all that are set."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def met_by(self, result: RequestResult) -> bool:
        if not result.ok:
            return False
        checks = ((self.ttft_ms, result.ttft), (self.tpot_ms, result.tpot),
                  (self.e2e_ms, result.e2e))
        for limit, value in checks:
            if limit is None:
                continue
            # A streaming-only figure that is missing (non-streaming TTFT) cannot be judged good.
            if value is None or value * 1000.0 > limit:
                return False
        return True


def describe(values_s: Iterable[float]) -> dict:
    """mean / p50 / p90 / p99 / min / max in milliseconds (None when there are no values)."""
    values = np.asarray([v for v in values_s if v is not None], dtype=float) * 1000.0
    if values.size == 0:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES},
                "min": None, "max": None}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
        "min": float(values.min()),
        "max": float(values.max()),
    }


def metric_values(results: Sequence[RequestResult], metric: str) -> list[float]:
    ok = [r for r in results if r.ok]
    if metric == "itl":
        return [gap for r in ok for gap in r.itl]
    if metric == "tpot":
        return [r.tpot for r in ok if r.tpot is not None]
    if metric == "ttft":
        return [r.ttft for r in ok if r.ttft is not None]
    if metric == "e2e":
        return [r.e2e for r in ok]
    raise ValueError(f"unknown metric {metric!r}")


def summarize(run: RunResult, slo: Slo | None = None) -> dict:
    """The summary of one level, as written to JSON and printed."""
    results = run.results
    ok = [r for r in results if r.ok]
    duration = run.duration if run.duration > 0 else math.nan
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    summary = {
        "label": run.spec.label(),
        "spec": asdict(run.spec),
        "duration_s": run.duration,
        "requests": len(results),
        "completed": len(ok),
        "errors": len(results) - len(ok),
        "error_kinds": dict(Counter(r.error for r in results if not r.ok)),
        "request_throughput": len(ok) / duration,
        "output_token_throughput": output_tokens / duration,
        "total_output_tokens": output_tokens,
        "mean_output_tokens": output_tokens / len(ok) if ok else None,
        "mean_prompt_tokens": float(np.mean(prompt_tokens)) if prompt_tokens else None,
        **{f"{m}_ms": describe(metric_values(results, m)) for m in METRICS},
    }
    if run.prefix_cache is not None:
        summary["prefix_cache"] = {
            "hit_tokens": run.prefix_cache.get(PREFIX_CACHE_HITS, 0.0),
            "queried_tokens": run.prefix_cache.get(PREFIX_CACHE_QUERIES, 0.0),
            "hit_rate": prefix_cache_hit_rate(run.prefix_cache)}
    if slo is not None and slo.any():
        good = sum(1 for r in results if slo.met_by(r))
        summary["slo"] = asdict(slo)
        summary["good_requests"] = good
        summary["goodput"] = good / duration
    return summary


def first_error_messages(run: RunResult, limit: int = 3) -> list[str]:
    return [f"{r.error}: {r.error_message}" for r in run.results if not r.ok][:limit]


def results_json(runs: Sequence[RunResult], *, slo: Slo | None, meta: dict,
                 include_requests: bool = True) -> dict:
    return {
        "meta": meta,
        "levels": [
            {**summarize(run, slo),
             **({"request_results": [r.to_json() for r in run.results]}
                if include_requests else {})}
            for run in runs
        ],
    }


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def format_table(summaries: Sequence[dict]) -> str:
    """A plain-text table of the levels: one row per level."""
    header = ["level", "ok", "err", "req/s", "tok/s", "TTFT p50", "TTFT p99", "ITL p50",
              "TPOT p50", "E2E p50", "E2E p99"]
    has_goodput = any("goodput" in s for s in summaries)
    if has_goodput:
        header.append("goodput")
    has_cache = any("prefix_cache" in s for s in summaries)
    if has_cache:
        header.append("hit %")
    rows = [header]
    for s in summaries:
        row = [s["label"], str(s["completed"]), str(s["errors"]),
               _fmt(s["request_throughput"], 2), _fmt(s["output_token_throughput"], 0),
               _fmt(s["ttft_ms"]["p50"]), _fmt(s["ttft_ms"]["p99"]), _fmt(s["itl_ms"]["p50"]),
               _fmt(s["tpot_ms"]["p50"]), _fmt(s["e2e_ms"]["p50"]), _fmt(s["e2e_ms"]["p99"])]
        if has_goodput:
            row.append(_fmt(s.get("goodput"), 2))
        if has_cache:
            rate = s.get("prefix_cache", {}).get("hit_rate")
            row.append(_fmt(None if rate is None else 100 * rate))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w)
                       in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + (
        "\n(latencies in ms; tok/s = output tokens per second"
        + ("; hit % = prefix-cache hit tokens / queried tokens over the level, from the "
           "servers' vllm:prefix_cache_* counters)" if has_cache else ")"))
