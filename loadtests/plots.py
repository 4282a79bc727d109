"""PNG plots: latency distributions per level; throughput and TTFT against load.

matplotlib runs headless (Agg); figures are small so they can be committed under docs/img/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.report import metric_values  # noqa: E402
from loadtests.runner import RunResult  # noqa: E402

_TITLES = {"ttft": "Time to first token", "itl": "Inter-token latency",
           "tpot": "Time per output token", "e2e": "End-to-end latency"}


def plot_latency_distributions(runs: Sequence[RunResult], path: Path, title: str = "") -> Path:
    """Empirical CDFs of TTFT, ITL, TPOT and E2E, one line per load level."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), dpi=80)
    for ax, metric in zip(axes.flat, _TITLES, strict=True):
        for run in runs:
            values = np.sort(np.asarray(metric_values(run.results, metric)) * 1000.0)
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                        label=run.spec.label())
        ax.set_title(_TITLES[metric], fontsize=10)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests" if metric != "itl" else "fraction of gaps")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _x_of(summary: dict) -> float:
    spec = summary["spec"]
    return spec["concurrency"] if spec["mode"] == "closed" else spec["rate"]


def plot_against_load(series: Mapping[str, Sequence[dict]], path: Path, title: str = "") -> Path:
    """Output-token throughput and TTFT p50/p99 against concurrency (or rate), one line per
    series (e.g. one per server in a comparison). `series` maps a name to level summaries."""
    fig, (ax_tp, ax_ttft) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    closed = True
    for name, summaries in series.items():
        if not summaries:
            continue
        closed = summaries[0]["spec"]["mode"] == "closed"
        xs = [_x_of(s) for s in summaries]
        ax_tp.plot(xs, [s["output_token_throughput"] for s in summaries], marker="o",
                   label=name)
        line, = ax_ttft.plot(xs, [s["ttft_ms"]["p50"] for s in summaries], marker="o",
                             label=f"{name} p50")
        ax_ttft.plot(xs, [s["ttft_ms"]["p99"] for s in summaries], marker="x", linestyle="--",
                     color=line.get_color(), label=f"{name} p99")
    xlabel = "concurrency (closed loop)" if closed else "arrival rate, req/s (open loop)"
    for ax in (ax_tp, ax_ttft):
        ax.set_xlabel(xlabel)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_tp.set_ylabel("output tokens / s")
    ax_tp.set_title("Output token throughput", fontsize=10)
    ax_ttft.set_ylabel("ms")
    ax_ttft.set_title("Time to first token", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
