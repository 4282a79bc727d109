"""The loss log (JSONL, one line per logging step) and its loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path


def read_loss_log(path: Path) -> list[dict]:
    """Entries by step; a step logged twice (a resumed run redid it) keeps its last value."""
    by_step: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            by_step[int(entry["step"])] = entry
    return [by_step[s] for s in sorted(by_step)]


def plot_loss(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title("huatuo train: loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
