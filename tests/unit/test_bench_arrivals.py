"""Load shapes of `huatuo bench`: gamma/Poisson arrivals, closed and open loops (fake sender)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loadtests.client import RequestResult
from loadtests.runner import arrival_gaps, closed_loop, open_loop, sweep_specs
from loadtests.workloads import single_turn


def test_gaps_are_seeded_and_reproducible() -> None:
    assert np.array_equal(arrival_gaps(50, 4.0, 1.0, seed=1), arrival_gaps(50, 4.0, 1.0, seed=1))
    assert not np.array_equal(arrival_gaps(50, 4.0, 1.0, seed=1),
                              arrival_gaps(50, 4.0, 1.0, seed=2))


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gap_mean_is_one_over_rate_and_cv_follows_burstiness(burstiness: float) -> None:
    gaps = arrival_gaps(200_000, rate=5.0, burstiness=burstiness, seed=0)
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=0.02)
    # Coefficient of variation of gamma(k) is 1/sqrt(k): 1 for Poisson (exponential gaps).
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.03)
    assert (gaps > 0).all()


def test_poisson_counts_per_window_have_variance_equal_to_mean() -> None:
    gaps = arrival_gaps(100_000, rate=10.0, burstiness=1.0, seed=3)
    times = np.cumsum(gaps)
    counts = np.bincount(times.astype(int))[:-1]  # arrivals per 1 s window (last one partial)
    assert counts.mean() == pytest.approx(10.0, rel=0.02)
    assert counts.var() == pytest.approx(10.0, rel=0.1)


def test_infinite_rate_and_bad_arguments() -> None:
    assert not arrival_gaps(5, float("inf")).any()
    with pytest.raises(ValueError):
        arrival_gaps(5, 1.0, burstiness=0)
    with pytest.raises(ValueError):
        arrival_gaps(5, 0.0)


class FakeServer:
    """Counts requests in flight; each takes a few event-loop turns."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.seen: list[int] = []

    async def send(self, request) -> RequestResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.seen.append(request.conversation)
        for _ in range(3):
            await asyncio.sleep(0)
        self.in_flight -= 1
        return RequestResult(ok=True, start=0.0, output_tokens=1)


def test_closed_loop_keeps_concurrency_and_cycles_the_workload() -> None:
    fake = FakeServer()
    requests = single_turn(5)
    results = asyncio.run(closed_loop(fake.send, requests, concurrency=4, num=23, duration=None))
    assert len(results) == 23
    assert fake.peak == 4
    assert fake.seen == [i % 5 for i in range(23)]


def test_closed_loop_stops_at_the_time_bound() -> None:
    fake = FakeServer()
    results = asyncio.run(closed_loop(fake.send, single_turn(3), concurrency=2, num=10**9,
                                      duration=0.0))
    assert results == []  # the time was up before anything started


def test_open_loop_sends_everything_and_respects_the_cap() -> None:
    fake = FakeServer()
    results = asyncio.run(open_loop(fake.send, single_turn(4), rate=float("inf"), burstiness=1,
                                    num=30, duration=None, max_concurrency=3))
    assert len(results) == 30
    assert fake.peak == 3
    uncapped = FakeServer()
    asyncio.run(open_loop(uncapped.send, single_turn(4), rate=float("inf"), burstiness=1,
                          num=30, duration=None))
    assert uncapped.peak == 30  # an open loop does not wait for answers


def test_open_loop_time_bound_cuts_the_arrival_schedule() -> None:
    fake = FakeServer()
    rate, duration = 40.0, 0.5
    results = asyncio.run(open_loop(fake.send, single_turn(4), rate=rate, burstiness=1.0,
                                    num=1000, duration=duration, seed=5))
    expected = int((np.cumsum(arrival_gaps(1000, rate, 1.0, seed=5)) < duration).sum())
    assert len(results) == expected


def test_sweep_specs() -> None:
    closed = sweep_specs(mode="closed", levels=[1, 8, 32], num_requests=50, duration=None)
    assert [s.label() for s in closed] == ["c=1", "c=8", "c=32"]
    opened = sweep_specs(mode="open", levels=[2.0], num_requests=5, duration=3.0,
                         burstiness=0.5, max_concurrency=16)
    assert opened[0].label() == "rate=2/s,gamma=0.5,max=16"
