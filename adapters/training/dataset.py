"""From data sources to packed training rows: read, priority-sample, tokenise, pack, report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.training.config import DataConfig
from adapters.training.packing import EncodeWithOffsets, PackedRows, pack, tokenize_sample
from adapters.training.readers import Sample, read_samples
from adapters.training.sampling import (
    SourceSpec,
    plot_source_mix,
    priority_order,
    summary,
    write_summary,
)

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    rows: PackedRows
    summary: dict


def read_sources(config: DataConfig) -> dict[str, list[Sample]]:
    """Samples per configured source (an `upstream` file may hold several; they are merged
    under the configured source name)."""
    by_source: dict[str, list[Sample]] = {}
    for source in config.sources:
        result = read_samples(Path(source.path), source.format, source.name,
                              skip_invalid=config.skip_invalid)
        if result.skipped:
            logger.warning("%s: skipped %d malformed record(s), e.g. %s", source.path,
                           result.skipped, result.problems[0])
        by_source[source.name] = result.samples
        logger.info("source %s: %d samples from %s", source.name, len(result.samples),
                    source.path)
    return by_source


def corpus_text(by_source: dict[str, list[Sample]]) -> list[str]:
    return [q + "\n" + a for samples in by_source.values() for s in samples for q, a in s.rounds]


def prepare(config: DataConfig, by_source: dict[str, list[Sample]], encode: EncodeWithOffsets,
            rows_per_step: int, report_dir: Path | None = None) -> PreparedData:
    specs = [SourceSpec(s.name, len(by_source[s.name]), s.priority, s.epochs)
             for s in config.sources]
    order = priority_order(specs, config.seed)
    # Data epochs repeat samples: tokenise each distinct sample once.
    cache: dict[tuple[str, int], object] = {}
    tokenized = []
    for slot in order:
        key = (slot.source, slot.index)
        if key not in cache:
            cache[key] = tokenize_sample(by_source[slot.source][slot.index].rounds, encode,
                                         config.max_seq_len)
        tokenized.append(cache[key])
    rows = pack(tokenized, config.max_seq_len)
    info = summary(specs, order)
    steps = [r // rows_per_step for r in rows.sample_rows]
    info.update({
        "max_seq_len": config.max_seq_len,
        "seed": config.seed,
        "packed_rows": len(rows.input_ids),
        "rows_per_step": rows_per_step,
        "steps_per_epoch": -(-len(rows.input_ids) // rows_per_step),
        "tokens": rows.real_tokens,
        "loss_tokens": sum(sum(1 for x in r if x != -100) for r in rows.labels),
        "packing_efficiency": round(rows.efficiency, 4),
    })
    print(f"priority sampling: {len(order)} sample slots from {len(specs)} sources -> "
          f"{len(rows.input_ids)} packed rows of {config.max_seq_len} tokens; "
          f"packing efficiency {rows.efficiency:.1%} (non-padding tokens)")
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_summary(report_dir / "data_summary.json", info)
        plot_source_mix([s.source for s in order], steps, report_dir / "source_mix.png",
                        names=[s.name for s in specs])
    return PreparedData(rows, info)


class PackedDataset:
    """Packed rows as a torch-style map dataset (input_ids, labels)."""

    def __init__(self, rows: PackedRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows.input_ids[i], "labels": self.rows.labels[i]}


def collate(batch: Sequence[dict]) -> dict:
    import torch

    return {
        "input_ids": torch.tensor([b["input_ids"] for b in batch], dtype=torch.long),
        "labels": torch.tensor([b["labels"] for b in batch], dtype=torch.long),
    }
