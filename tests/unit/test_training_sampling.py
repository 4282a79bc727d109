"""Priority sampling: reproducible per seed, and the source mix over steps follows priorities."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from adapters.training.sampling import (
    SourceSpec,
    build_slots,
    expected_consumed,
    plot_source_mix,
    priority_order,
    summary,
)

SOURCES = [
    SourceSpec("web", 3000, priority=32),
    SourceSpec("books", 3000, priority=4),
    SourceSpec("sft", 1000, priority=1, epochs=3),
]


def test_slots_weights_and_data_epochs() -> None:
    slots, weights = build_slots([SourceSpec("a", 2, 16), SourceSpec("sft", 2, 1, epochs=3)])
    assert [(x.source, x.index) for x in slots] == [
        ("a", 0), ("a", 1), ("sft", 0), ("sft", 1), ("sft", 0), ("sft", 1), ("sft", 0), ("sft", 1)]
    assert weights == [16, 16, 1, 1, 1, 1, 1, 1]


def test_same_seed_same_order_other_seed_other_order() -> None:
    a = priority_order(SOURCES, seed=42)
    assert a == priority_order(SOURCES, seed=42)
    assert a != priority_order(SOURCES, seed=43)
    # Without replacement: every slot exactly once.
    assert Counter((x.source, x.index) for x in a)[("sft", 7)] == 3
    assert len(a) == 3000 + 3000 + 3000


def test_matches_upstream_single_multinomial_draw() -> None:
    import torch

    slots, weights = build_slots(SOURCES)
    g = torch.Generator()
    g.manual_seed(7)
    expected = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), len(slots),
                                 replacement=False, generator=g).tolist()
    assert priority_order(SOURCES, seed=7) == [slots[i] for i in expected]


@pytest.mark.parametrize("seed", [0, 1])
def test_source_mix_over_steps_follows_priorities(seed: int) -> None:
    order = priority_order(SOURCES, seed=seed)
    n = len(order)
    for fraction in (0.05, 0.2, 0.4, 0.6, 0.8):
        k = int(n * fraction)
        seen = Counter(x.source for x in order[:k])
        expected = expected_consumed(SOURCES, k)
        for spec in SOURCES:
            e = expected[spec.name]
            # Binomial-scale tolerance: 5 standard deviations (+ 1 for tiny counts).
            tol = 5 * math.sqrt(max(e * (1 - e / spec.slots), 1.0)) + 1
            assert abs(seen[spec.name] - e) <= tol, (fraction, spec.name, seen, expected)
    # The shape upstream relies on: web first, SFT at the end.
    first, last = Counter(x.source for x in order[: n // 10]), Counter(
        x.source for x in order[-n // 10:])
    assert first["web"] > 0.8 * (n // 10)
    assert last["sft"] > 0.8 * (n // 10)


def test_first_draw_distribution_matches_weights() -> None:
    # P(first slot from source s) = n_s w_s / sum(n w), over many seeds.
    sources = [SourceSpec("a", 10, 4), SourceSpec("b", 30, 1)]
    trials = 2000
    firsts = Counter(priority_order(sources, seed=s)[0].source for s in range(trials))
    p = 40 / 70
    assert abs(firsts["a"] - trials * p) <= 5 * math.sqrt(trials * p * (1 - p))


def test_summary_and_plot(tmp_path) -> None:
    order = priority_order(SOURCES, seed=0)
    info = summary(SOURCES, order)
    assert info["total_slots"] == 9000
    assert info["sources"]["sft"]["slots"] == 3000
    path = tmp_path / "mix.png"
    plot_source_mix([x.source for x in order], [i // 90 for i in range(len(order))], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_priority_rejected() -> None:
    with pytest.raises(ValueError):
        build_slots([SourceSpec("a", 3, 0)])
