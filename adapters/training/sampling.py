"""Priority sampling, exactly as upstream HuatuoGPT-II (`data_process.py`).

Every sample slot gets its source's priority as its weight; a source with `epochs: 3` has three
slots per sample (its "data epochs"). The whole training order is ONE seeded
`torch.multinomial(weights, N, replacement=False)` draw: high-priority sources (the unified
pre-training data) are likely to be drawn early, so they dominate the start of training, and the
low-priority SFT data dominates the end.

Equivalent view used by the tests: drawing without replacement in proportion to weights orders
the slots by E_i / w_i with E_i ~ Exp(1), so after k draws source s has consumed about
n_s * (1 - exp(-w_s * t)) of its n_s slots, t solving sum_s n_s * (1 - exp(-w_s * t)) = k.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# torch.multinomial draws from at most 2**24 categories.
MAX_SLOTS = 2**24


@dataclass(frozen=True)
class SourceSpec:
    name: str
    size: int  # number of distinct samples
    priority: float
    epochs: float = 1.0

    @property
    def slots(self) -> int:
        return int(self.size * self.epochs)


@dataclass(frozen=True)
class Slot:
    source: str
    index: int  # sample index within the source


def build_slots(sources: Sequence[SourceSpec]) -> tuple[list[Slot], list[float]]:
    """One slot per (sample, data epoch), weighted by the source priority."""
    slots: list[Slot] = []
    weights: list[float] = []
    for spec in sources:
        if spec.priority <= 0:
            raise ValueError(f"source {spec.name!r}: priority must be > 0, got {spec.priority}")
        if spec.size == 0:
            continue
        for k in range(spec.slots):
            slots.append(Slot(spec.name, k % spec.size))
        weights += [float(spec.priority)] * spec.slots
    return slots, weights


def priority_order(sources: Sequence[SourceSpec], seed: int) -> list[Slot]:
    """The training order: one seeded draw of all slots without replacement."""
    import torch

    slots, weights = build_slots(sources)
    if not slots:
        raise ValueError("no training samples: every source is empty")
    if len(slots) > MAX_SLOTS:
        raise ValueError(f"{len(slots)} sample slots; torch.multinomial allows {MAX_SLOTS}. "
                         "Lower `epochs` or split the run.")
    generator = torch.Generator()
    generator.manual_seed(seed)
    order = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), len(slots),
                              replacement=False, generator=generator).tolist()
    return [slots[i] for i in order]


def expected_consumed(sources: Sequence[SourceSpec], k: int) -> dict[str, float]:
    """Expected number of slots of each source among the first k draws (large-N limit)."""
    specs = [s for s in sources if s.slots]
    total = sum(s.slots for s in specs)
    if k >= total:
        return {s.name: float(s.slots) for s in specs}

    def consumed(t: float) -> float:
        return sum(s.slots * (1 - math.exp(-s.priority * t)) for s in specs)

    lo, hi = 0.0, 1.0
    while consumed(hi) < k:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if consumed(mid) < k else (lo, mid)
    return {s.name: s.slots * (1 - math.exp(-s.priority * hi)) for s in specs}


def summary(sources: Sequence[SourceSpec], order: Sequence[Slot]) -> dict:
    """Counts per source: distinct samples, epochs, slots, share of the order."""
    counts = Counter(slot.source for slot in order)
    total = len(order)
    return {
        "total_slots": total,
        "sources": {
            s.name: {"samples": s.size, "priority": s.priority, "epochs": s.epochs,
                     "slots": counts.get(s.name, 0),
                     "share": round(counts.get(s.name, 0) / total, 4) if total else 0.0}
            for s in sources
        },
    }


def write_summary(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def plot_source_mix(sample_sources: Sequence[str], sample_steps: Sequence[int], path: Path,
                    title: str = "Source mix over training steps (priority sampling)",
                    names: Sequence[str] | None = None) -> None:
    """Stacked share of each source per training step (upstream's figure 3), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(names or dict.fromkeys(sample_sources))
    steps = max(sample_steps) + 1 if sample_steps else 1
    # Many steps: group them into at most 100 bins so the plot stays readable.
    bins = min(steps, 100)
    counts = [[0] * bins for _ in names]
    index = {n: i for i, n in enumerate(names)}
    for source, step in zip(sample_sources, sample_steps, strict=True):
        counts[index[source]][step * bins // steps] += 1
    totals = [sum(col) or 1 for col in zip(*counts, strict=True)]
    shares = [[c / t for c, t in zip(row, totals, strict=True)] for row in counts]
    # Bin edges, the last share repeated: each bin is drawn as a flat band ("post" steps).
    x = [b * steps / bins for b in range(bins)] + [steps]
    shares = [row + row[-1:] for row in shares]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.stackplot(x, shares, labels=names, step="post")
    ax.set_xlim(0, steps)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of samples")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
