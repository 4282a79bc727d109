"""Load shapes: closed loop (fixed concurrency), open loop (Poisson/gamma arrivals), sweeps.

Every run is bounded twice: by a number of requests and (optionally) by time. When the time is
up no new request starts; requests in flight finish and count. Throughput is measured over the
wall time from the first request sent to the last one finished.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
import uvloop
from tqdm import tqdm

from loadtests import server_metrics
from loadtests.client import BenchClient, RequestResult, SamplingOptions
from loadtests.workloads import BenchRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")


def run_load(main: Coroutine[Any, Any, T]) -> T:
    """Run a load generator's coroutine on uvloop: the client shares the machine with the
    server it measures, and uvloop's C event loop and transports cut the client's CPU per
    streamed event by about a third against asyncio's own loop."""
    return uvloop.run(main)


@dataclass
class LoadSpec:
    """One load level. Closed loop: `concurrency` workers, each sends its next request as soon
    as the previous one finishes. Open loop: requests arrive at `rate` per second with gamma
    gaps of shape `burstiness` (1 = Poisson, < 1 burstier, > 1 steadier), capped at
    `concurrency` in flight when that is set."""

    mode: str = "closed"  # "closed" | "open"
    concurrency: int | None = 1
    rate: float | None = None
    burstiness: float = 1.0
    num_requests: int = 100
    duration: float | None = None  # seconds; None: bounded by num_requests only
    warmup: int = 0  # requests sent first and not recorded
    seed: int = 0

    def label(self) -> str:
        if self.mode == "closed":
            return f"c={self.concurrency}"
        cap = f",max={self.concurrency}" if self.concurrency else ""
        return f"rate={self.rate:g}/s,gamma={self.burstiness:g}{cap}"


@dataclass
class RunResult:
    spec: LoadSpec
    results: list[RequestResult]
    duration: float  # seconds from the first send to the last completion
    started_at: float = field(default_factory=time.time)  # wall clock, for the JSON
    # The servers' prefix-cache counters over the level (server_metrics names), summed over
    # the scraped targets; None when none were scraped.
    prefix_cache: dict[str, float] | None = None


@dataclass
class Target:
    """Where to send requests and how."""

    base_url: str
    model: str | None = None  # None: the first id of GET /v1/models
    api_key: str | None = None
    stream: bool = True
    timeout: float = 600.0
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    # Send `X-Session-ID: consultation-<n>` with each request (session-pinning routers).
    session_header: bool = False
    # Servers whose /metrics hold the engine's prefix-cache counters: the replicas behind a
    # router (the router's own /metrics has none); empty: `base_url` itself.
    metrics_urls: tuple[str, ...] = ()

    @property
    def cache_targets(self) -> tuple[str, ...]:
        return self.metrics_urls or (self.base_url,)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("api_key")  # never write a secret into results
        return out


def arrival_gaps(num: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Seconds between successive arrivals: gamma(shape=burstiness, scale=1/(rate*burstiness)).

    The mean gap is 1/rate whatever the burstiness; the coefficient of variation is
    1/sqrt(burstiness), so burstiness 1 gives a Poisson process (exponential gaps).
    An infinite rate sends everything at once.
    """
    if burstiness <= 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if np.isinf(rate):
        return np.zeros(num)
    rng = np.random.default_rng(seed)
    return rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=num)


async def closed_loop(send, requests: Sequence[BenchRequest], concurrency: int, num: int,
                      duration: float | None, progress: tqdm | None = None
                      ) -> list[RequestResult]:
    """`concurrency` workers share the request list (cycled) until `num` or `duration`."""
    source = itertools.cycle(requests)
    results: list[RequestResult] = []
    issued = 0
    deadline = None if duration is None else time.perf_counter() + duration

    async def worker() -> None:
        nonlocal issued
        while issued < num and (deadline is None or time.perf_counter() < deadline):
            issued += 1
            result = await send(next(source))
            results.append(result)
            if progress is not None:
                progress.update(1)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return results


async def open_loop(send, requests: Sequence[BenchRequest], rate: float, burstiness: float,
                    num: int, duration: float | None, max_concurrency: int | None = None,
                    seed: int = 0, progress: tqdm | None = None) -> list[RequestResult]:
    """Requests start at seeded gamma-distributed times whether earlier ones finished or not."""
    source = itertools.cycle(requests)
    gaps = arrival_gaps(num, rate, burstiness, seed)
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    results: list[RequestResult] = []

    async def one(request: BenchRequest) -> None:
        if limit is None:
            result = await send(request)
        else:
            async with limit:
                result = await send(request)
        results.append(result)
        if progress is not None:
            progress.update(1)

    start = time.perf_counter()
    tasks = []
    due = 0.0
    for gap in gaps:
        due += float(gap)
        if duration is not None and due >= duration:
            break
        delay = start + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(next(source))))
    await asyncio.gather(*tasks)
    return results


async def run_level(client: BenchClient, requests: Sequence[BenchRequest], spec: LoadSpec,
                    show_progress: bool = True, cache_targets: Sequence[str] = (),
                    api_key: str | None = None) -> RunResult:
    """One level; with `cache_targets`, their prefix-cache counters are read before and after
    (warm-up excluded) and the difference is the level's `prefix_cache`."""
    if spec.warmup:
        await closed_loop(client.send, requests, spec.concurrency or 1, spec.warmup, None)
    before = await _counters(cache_targets, api_key)
    progress = tqdm(total=spec.num_requests, desc=spec.label(), unit="req", leave=False,
                    disable=not show_progress)
    started_at = time.time()
    start = time.perf_counter()
    try:
        if spec.mode == "closed":
            results = await closed_loop(client.send, requests, spec.concurrency or 1,
                                        spec.num_requests, spec.duration, progress)
        elif spec.mode == "open":
            if spec.rate is None:
                raise ValueError("open loop needs a rate")
            results = await open_loop(client.send, requests, spec.rate, spec.burstiness,
                                      spec.num_requests, spec.duration, spec.concurrency,
                                      spec.seed, progress)
        else:
            raise ValueError(f"mode must be 'closed' or 'open', got {spec.mode!r}")
    finally:
        progress.close()
    duration = time.perf_counter() - start
    after = await _counters(cache_targets, api_key)
    delta = before.delta(after) if before is not None and after is not None else None
    return RunResult(spec, results, duration, started_at, delta)


async def _counters(targets: Sequence[str], api_key: str | None
                    ) -> server_metrics.CounterSnapshot | None:
    """The targets' prefix-cache counters; None (with a warning) when one cannot be read: a
    server without vLLM's metrics must not fail the load test."""
    if not targets:
        return None
    try:
        return await server_metrics.snapshot(targets, api_key=api_key)
    except (httpx.HTTPError, ValueError) as exc:
        logger.warning("prefix-cache counters not read from %s: %s", ", ".join(targets), exc)
        return None


async def resolve_model(target: Target) -> str:
    if target.model:
        return target.model
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(target.base_url.rstrip("/") + "/v1/models", headers=headers)
        response.raise_for_status()
        return response.json()["data"][0]["id"]


async def run_sweep_async(target: Target, requests: Sequence[BenchRequest],
                          specs: Sequence[LoadSpec], show_progress: bool = True
                          ) -> list[RunResult]:
    """Each level in turn, every level starting from the same first request."""
    model = await resolve_model(target)
    top = max((s.concurrency or 0) for s in specs) or 1024
    client = BenchClient(target.base_url, model, api_key=target.api_key, stream=target.stream,
                         timeout=target.timeout, sampling=target.sampling,
                         max_connections=max(top, 64), session_header=target.session_header)
    try:
        return [await run_level(client, requests, spec, show_progress, target.cache_targets,
                                target.api_key) for spec in specs]
    finally:
        await client.aclose()


def run_sweep(target: Target, requests: Sequence[BenchRequest], specs: Sequence[LoadSpec],
              show_progress: bool = True) -> list[RunResult]:
    return run_load(run_sweep_async(target, requests, specs, show_progress))


def sweep_specs(*, mode: str, levels: Sequence[float], num_requests: int,
                duration: float | None, burstiness: float = 1.0,
                max_concurrency: int | None = None, warmup: int = 0, seed: int = 0
                ) -> list[LoadSpec]:
    """Closed loop: `levels` are concurrencies. Open loop: `levels` are rates (req/s)."""
    if mode == "closed":
        return [LoadSpec("closed", int(c), None, burstiness, num_requests, duration, warmup, seed)
                for c in levels]
    return [LoadSpec("open", max_concurrency, float(r), burstiness, num_requests, duration,
                     warmup, seed) for r in levels]
