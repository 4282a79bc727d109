"""`huatuo bench router`: routing policies of vllm-router in front of two replicas, measured.

    .venv/bin/huatuo bench router                    # the demo model, the whole comparison
    .venv/bin/huatuo bench router --num-requests 48 --no-record

Starts two `huatuo serve` replicas of one checkpoint (the tiny demo model by default) and, for
each policy (`round_robin`, `cache_aware`, `consistent_hash` with an `X-Session-ID` per
consultation), a fresh `vllm-router` in front of them; sends the multi-turn workload with long
histories through it; and reads the fleet's prefix-cache hit rate from the replicas' own
`vllm:prefix_cache_*` counters, next to TTFT and throughput. A single replica (no router) is
the reference: every follow-up turn finds its history there. Then a failover run: one replica
is killed (SIGKILL) mid-run under `cache_aware`; it counts what the router retried (its own
`vllm_router_retries_total`) and what the clients lost (streams cut after their first token,
requests failed before it).

Every run prefixes its consultations with a run tag, so no run finds the previous runs'
conversations in the (shared) prefix caches: each policy starts cold.

Records `router-policies` and `router-failover` (figures.record) for docs/scaling.md and draws
docs/img/router-policies.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from figures.record import write_result
from loadtests.client import BenchClient, RequestResult
from loadtests.report import format_table, summarize
from loadtests.runner import (
    LoadSpec,
    RunResult,
    Target,
    closed_loop,
    run_load,
    run_sweep_async,
)
from loadtests.server_process import (
    ROOT,
    ServerProcess,
    free_port,
    huatuo_serve_argv,
    vllm_router_argv,
)
from loadtests.workloads import BenchRequest, multi_turn

POLICIES = ("round_robin", "cache_aware", "consistent_hash")
SERVED_NAME = "bench"
PLOT = ROOT / "docs" / "img" / "router-policies.png"
# Health checks every 2 s, one failure marks a replica down: failover within seconds (the
# router's defaults, 60 s and 3, suit long-lived fleets behind Kubernetes probes).
ROUTER_ARGS = ["--health-check-interval-secs", "2", "--health-failure-threshold", "1",
               "--log-level", "warning"]
ROUTER_COUNTERS = ("vllm_router_processed_requests", "vllm_router_retries",
                   "vllm_router_retries_exhausted", "vllm_router_request_errors")


def long_consultations(num: int, seed: int, max_tokens: int) -> list[BenchRequest]:
    """Consultations of 4-8 turns with long answers: histories of a few hundred to over a
    thousand tokens, which a replica without them must prefill again."""
    return multi_turn(num, seed=seed, language="zh", max_tokens=max_tokens, turns=(4, 8),
                      answer_sentences=(6, 10))


def tagged(requests: Sequence[BenchRequest], tag: str) -> list[BenchRequest]:
    """The same requests with `tag` in front of each consultation's first message: one run's
    prompts share no prefix with another run's."""
    out = []
    for request in requests:
        first, *rest = request.messages
        messages = [{**first, "content": f"[{tag}] {first['content']}"}, *rest]
        out.append(dataclasses.replace(request, messages=messages))
    return out


def router_counters(text: str) -> dict[str, float]:
    """vllm-router's counters of interest, per worker where it labels them (`name{worker}`)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in ROUTER_COUNTERS:
                key = f"{name}{{{sample.labels['worker']}}}" if "worker" in sample.labels \
                    else name
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


async def scrape_router(metrics_url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(metrics_url)
        response.raise_for_status()
        return router_counters(response.text)


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}


def start_router(policy: str, workers: list[str], log_dir: Path) -> tuple[ServerProcess, str]:
    port, prometheus = free_port(), free_port()
    router = ServerProcess(vllm_router_argv(port, workers, policy, prometheus, ROUTER_ARGS),
                           log_dir / f"router-{policy}.log", port=port,
                           name=f"vllm-router {policy}").start_ready(120)
    return router, f"http://127.0.0.1:{prometheus}/metrics"


@dataclasses.dataclass
class PolicyResult:
    name: str
    run: RunResult
    router: dict[str, float]  # router counter deltas over the run (empty without a router)

    def row(self) -> dict:
        summary = summarize(self.run)
        cache = summary.get("prefix_cache", {})
        per_worker = [v for k, v in self.router.items()
                      if k.startswith("vllm_router_processed_requests{")]
        return {"policy": self.name, "completed": summary["completed"],
                "errors": summary["errors"], "hit_rate": cache.get("hit_rate"),
                "ttft_p50_ms": summary["ttft_ms"]["p50"], "ttft_p99_ms": summary["ttft_ms"]["p99"],
                "request_throughput": summary["request_throughput"],
                "output_token_throughput": summary["output_token_throughput"],
                "requests_per_replica": sorted(per_worker, reverse=True)}


async def measure(name: str, base_url: str, replicas: list[str], requests: list[BenchRequest],
                  spec: LoadSpec, session_header: bool, router_metrics: str | None
                  ) -> PolicyResult:
    target = Target(base_url, SERVED_NAME, session_header=session_header,
                    metrics_urls=tuple(replicas))
    before = await scrape_router(router_metrics) if router_metrics else {}
    (run,) = await run_sweep_async(target, requests, [spec], show_progress=False)
    after = await scrape_router(router_metrics) if router_metrics else {}
    return PolicyResult(name, run, _delta(before, after))


async def failover(base_url: str, victim: ServerProcess, requests: list[BenchRequest],
                   concurrency: int, kill_after: int, router_metrics: str) -> dict:
    """Send `requests` through the router; SIGKILL `victim` once `kill_after` have finished."""
    client = BenchClient(base_url, SERVED_NAME, stream=True, timeout=120)
    finished = 0
    killed_at: list[float] = []

    async def send(request: BenchRequest) -> RequestResult:
        nonlocal finished
        result = await client.send(request)
        finished += 1
        if finished == kill_after:
            killed_at.append(time.perf_counter())
            await asyncio.to_thread(victim.kill)
        return result

    before = await scrape_router(router_metrics)
    try:
        results = await closed_loop(send, requests, concurrency, len(requests), None)
    finally:
        await client.aclose()
    after = await scrape_router(router_metrics)
    cut = [r for r in results if not r.ok and r.ttft is not None]
    refused = [r for r in results if not r.ok and r.ttft is None]
    delta = _delta(before, after)
    return {
        "requests": len(results), "completed": sum(r.ok for r in results),
        "streams_cut": len(cut), "failed_before_first_token": len(refused),
        "error_kinds": sorted({r.error or "" for r in results if not r.ok}),
        "router_retries": delta.get("vllm_router_retries", 0.0),
        "router_retries_exhausted": delta.get("vllm_router_retries_exhausted", 0.0),
        "router_counters": delta, "kill_after": kill_after,
    }


def policy_table(rows: list[dict]) -> str:
    def fmt(value, digits=1, scale=1.0):
        return "-" if value is None else f"{value * scale:.{digits}f}"

    lines = ["| setup | prefix-cache hit rate | TTFT p50 (ms) | TTFT p99 (ms) | requests/s | "
             "output tokens/s | requests per replica | errors |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        per_replica = " / ".join(str(int(v)) for v in r["requests_per_replica"]) or "-"
        lines.append(f"| {r['policy']} | {fmt(r['hit_rate'], 1, 100)} % | "
                     f"{fmt(r['ttft_p50_ms'])} | {fmt(r['ttft_p99_ms'])} | "
                     f"{fmt(r['request_throughput'], 2)} | "
                     f"{fmt(r['output_token_throughput'], 0)} | {per_replica} | "
                     f"{r['errors']} |")
    return "\n".join(lines)


def failover_table(f: dict) -> str:
    return "\n".join([
        "| requests | completed | streams cut after their first token | failed before it | "
        "router retries | retries exhausted |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {f['requests']} | {f['completed']} | {f['streams_cut']} | "
        f"{f['failed_before_first_token']} | {int(f['router_retries'])} | "
        f"{int(f['router_retries_exhausted'])} |"])


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["policy"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=80)
    panels = [("prefix-cache hit rate (%)", [100 * (r["hit_rate"] or 0) for r in rows]),
              ("TTFT p50 / p99 (ms)", None),
              ("requests / s", [r["request_throughput"] for r in rows])]
    for ax, (title, values) in zip(axes, panels, strict=True):
        if values is None:
            x = range(len(rows))
            ax.bar([i - 0.2 for i in x], [r["ttft_p50_ms"] or 0 for r in rows], 0.4,
                   label="p50")
            ax.bar([i + 0.2 for i in x], [r["ttft_p99_ms"] or 0 for r in rows], 0.4,
                   label="p99")
            ax.legend(fontsize=8)
            ax.set_xticks(list(x))
        else:
            ax.bar(range(len(rows)), values)
            ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def start_replicas(model: Path, count: int, max_model_len: int, log_dir: Path
                   ) -> list[ServerProcess]:
    servers = []
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    for i in range(count):
        port = free_port()
        servers.append(ServerProcess(
            huatuo_serve_argv(port, ["--model", str(model), "--served-model-name", SERVED_NAME,
                                     "--max-model-len", str(max_model_len),
                                     "--dtype", "float32"]),
            log_dir / f"replica-{i}.log", port=port, env=env, name=f"replica {i}").start())
    try:
        for server in servers:
            server.wait_ready()
    except Exception:
        for server in servers:
            server.stop()
        raise
    return servers


async def compare(replicas: list[ServerProcess], args: argparse.Namespace, log_dir: Path
                  ) -> tuple[list[PolicyResult], dict]:
    urls = [r.base_url for r in replicas]
    spec = LoadSpec("closed", args.concurrency, num_requests=args.num_requests)
    results = []
    for round_ in range(args.repeats):
        # Reference: one replica, no router: every follow-up finds its history.
        requests = tagged(long_consultations(args.num_requests, args.seed, args.max_tokens),
                          f"single {round_}")
        results.append(await measure("single replica (reference)", urls[0], urls[:1],
                                     requests, spec, False, None))
        for policy in POLICIES:
            router, metrics = start_router(policy, urls, log_dir)
            try:
                requests = tagged(long_consultations(args.num_requests, args.seed,
                                                     args.max_tokens), f"{policy} {round_}")
                name = f"{policy} (X-Session-ID)" if policy == "consistent_hash" else policy
                results.append(await measure(name, router.base_url, urls, requests, spec,
                                             policy == "consistent_hash", metrics))
            finally:
                router.stop()
    router, metrics = start_router("cache_aware", urls, log_dir)
    try:
        requests = tagged(long_consultations(args.num_requests, args.seed, args.max_tokens),
                          "failover")
        outcome = await failover(router.base_url, replicas[1], requests, args.concurrency,
                                 args.num_requests // 3, metrics)
    finally:
        router.stop()
    return results, outcome


def merged_rows(results: list[PolicyResult]) -> list[dict]:
    """One row per setup: with repeats, the median of each figure over the rounds."""
    import statistics

    by_name: dict[str, list[dict]] = {}
    for result in results:
        by_name.setdefault(result.name, []).append(result.row())
    rows = []
    for group in by_name.values():
        row = dict(group[0])
        for key in ("hit_rate", "ttft_p50_ms", "ttft_p99_ms", "request_throughput",
                    "output_token_throughput"):
            values = [g[key] for g in group if g[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["errors"] = sum(g["errors"] for g in group)
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="Checkpoint to serve (default: the tiny demo model, built once).")
    parser.add_argument("--num-requests", type=int, default=96,
                        help="Requests per setup (turns of 4-8-turn consultations).")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16,
                        help="Answer length: short, so prefill (what the cache saves) dominates.")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1, help="Rounds over all setups.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--no-record", action="store_true",
                        help="Print only: do not write docs/results or the plot.")


def run(args: argparse.Namespace) -> int:
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-router-"))
    model = args.model_dir
    if model is None:
        from huatuogpt2.demo_checkpoint import ensure_demo_model

        model = ensure_demo_model(Path(tempfile.gettempdir()) / "huatuo-bench-router")
    load_before = os.getloadavg()
    replicas = start_replicas(model, 2, args.max_model_len, log_dir)
    try:
        results, outcome = run_load(compare(replicas, args, log_dir))
    finally:
        for replica in replicas:
            replica.stop()
    load_after = os.getloadavg()
    rows = merged_rows(results)
    print(format_table([{**summarize(r.run), "label": r.name} for r in results]))
    print(policy_table(rows))
    print(failover_table(outcome))
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    print(load)
    if args.no_record:
        return 0
    setup = (f"{len(replicas)} replicas of `{model.name}`, {args.num_requests} requests per "
             f"setup at concurrency {args.concurrency}, {args.repeats} round(s); {load}")
    write_result("router-policies", policy_table(rows) + f"\n\n{setup}.",
                 inline={"cache_aware_hit": _pct(rows, "cache_aware"),
                         "round_robin_hit": _pct(rows, "round_robin"),
                         "single_hit": _pct(rows, "single replica (reference)"),
                         "load": load},
                 data={"rows": rows, "load_average": [load_before, load_after]})
    write_result("router-failover", failover_table(outcome) + f"\n\n{setup}.",
                 inline={"retries": str(int(outcome["router_retries"])),
                         "cut": str(outcome["streams_cut"]),
                         "lost": str(outcome["failed_before_first_token"])},
                 data=outcome)
    plot(rows, PLOT)
    return 0


def _pct(rows: list[dict], name: str) -> str:
    rate = next((r["hit_rate"] for r in rows if r["policy"] == name), None)
    return "-" if rate is None else f"{100 * rate:.0f} %"
