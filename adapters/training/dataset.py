"""From data sources to packed training rows: read, priority-sample, tokenise, pack, report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapters.training.config import DataConfig
from adapters.training.packing import (
    IGNORE_INDEX,
    PackedRows,
    SampleTooLong,
    TokenizedSample,
    conversation_text,
    hf_batch_encoder,
    label_tokens,
    pack,
)
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


ENCODE_BATCH = 1024
PREP_VERSION = "2"  # bump when packing or labelling changes


def tokenize_in_order(order, by_source, encode_batch, config: DataConfig) -> list:
    """Tokenised samples in training order; each distinct sample is encoded once (data epochs
    repeat samples), in batches for the Rust tokenizer.

    A sample longer than config.max_seq_len is cut to it when config.truncate_long_samples
    (upstream; counted and logged here, `truncated_samples` in the summary), else refused
    with `SampleTooLong` naming its source and id."""
    keys = list(dict.fromkeys((slot.source, slot.index) for slot in order))
    tokenized: dict[tuple[str, int], TokenizedSample] = {}
    truncated: list[str] = []
    for start in range(0, len(keys), ENCODE_BATCH):
        chunk = keys[start:start + ENCODE_BATCH]
        rendered = [conversation_text(by_source[src][i].rounds) for src, i in chunk]
        encoded = encode_batch([text for text, _ in rendered])
        for key, (_, spans), (ids, offsets) in zip(chunk, rendered, encoded, strict=True):
            try:
                sample = label_tokens(ids, offsets, spans, config.max_seq_len,
                                      truncate=config.truncate_long_samples)
            except SampleTooLong as exc:
                name = sample_name(by_source, key)
                raise SampleTooLong(exc.length, exc.max_seq_len, name) from None
            if sample.truncated_from:
                truncated.append(f"{sample_name(by_source, key)} ({sample.truncated_from} "
                                 "tokens)")
            tokenized[key] = sample
    if truncated:
        logger.warning("%d of %d distinct samples are longer than max_seq_len %d and were cut "
                       "to it (data.truncate_long_samples: true), e.g. %s", len(truncated),
                       len(keys), config.max_seq_len, ", ".join(truncated[:3]))
    return [tokenized[(slot.source, slot.index)] for slot in order]


def sample_name(by_source: dict[str, list[Sample]], key: tuple[str, int]) -> str:
    source, index = key
    return f"source {source!r} sample {by_source[source][index].id!r}"


def prepare(config: DataConfig, by_source: dict[str, list[Sample]], encode_batch,
            rows_per_step: int, report_dir: Path | None = None) -> PreparedData:
    specs = [SourceSpec(s.name, len(by_source[s.name]), s.priority, s.epochs)
             for s in config.sources]
    order = priority_order(specs, config.seed)
    samples = tokenize_in_order(order, by_source, encode_batch, config)
    rows = pack(samples, config.max_seq_len, strategy=config.packing,
                window_rows=config.packing_window_rows)
    info = summary(specs, order)
    steps = [r // rows_per_step for r in rows.sample_rows]
    truncated = len({(slot.source, slot.index) for slot, sample in zip(order, samples,
                                                                         strict=True)
                     if sample.truncated_from})
    info.update({
        "max_seq_len": config.max_seq_len,
        "seed": config.seed,
        "packing": config.packing,
        "packing_window_rows": config.packing_window_rows,
        "packed_rows": int(rows.input_ids.shape[0]),
        "rows_per_step": rows_per_step,
        "steps_per_epoch": -(-int(rows.input_ids.shape[0]) // rows_per_step),
        "tokens": rows.real_tokens,
        "loss_tokens": int((rows.labels != IGNORE_INDEX).sum()),
        "packing_efficiency": round(rows.efficiency, 4),
        "packing_efficiency_bound": round(rows.efficiency_bound, 4),
        "truncated_samples": truncated,
    })
    for name, row in info["sources"].items():
        print(f"  {name:<24} samples {row['samples']:>9}  priority {row['priority']:>6g}  "
              f"epochs {row['epochs']:>4g}  slots {row['slots']:>9}  share {row['share']:.1%}")
    print(f"priority sampling: {len(order)} sample slots from {len(specs)} sources -> "
          f"{info['packed_rows']} packed rows of {config.max_seq_len} tokens ({config.packing}); "
          f"packing efficiency {rows.efficiency:.1%} (non-padding tokens; at best "
          f"{rows.efficiency_bound:.1%}: {rows.real_tokens} tokens in whole rows)"
          + (f"; {truncated} sample(s) cut to max_seq_len" if truncated else ""))
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_summary(report_dir / "data_summary.json", info)
        plot_source_mix([s.source for s in order], steps, report_dir / "source_mix.png",
                        names=[s.name for s in specs])
    return PreparedData(rows, info)


def cache_key(config: DataConfig, tokenizer_dir: Path, rows_per_step: int) -> str:
    """Changes whenever the packed rows could: data files, data config, tokenizer, code."""
    digest = hashlib.sha256(PREP_VERSION.encode())
    digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    digest.update(str(rows_per_step).encode())
    for source in config.sources:
        stat = Path(source.path).stat()
        digest.update(f"{source.path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update((Path(tokenizer_dir) / "tokenizer.json").read_bytes())
    return digest.hexdigest()[:16]


def load_or_prepare(config: DataConfig, tokenizer, tokenizer_dir: Path, rows_per_step: int,
                    run_dir: Path, is_main: bool) -> PreparedData:
    """Packed rows cached in <run_dir>/packed: prepared once (by the main process), then
    memory-mapped by every process and by resumed runs."""
    cache = run_dir / "packed"
    key = cache_key(config, tokenizer_dir, rows_per_step)
    if (cache / "key.txt").exists() and (cache / "key.txt").read_text() == key:
        info = json.loads((cache / "summary.json").read_text())
        rows = PackedRows(np.load(cache / "input_ids.npy", mmap_mode="r"),
                          np.load(cache / "labels.npy", mmap_mode="r"), [], info["tokens"])
        print(f"packed data from cache {cache}: {info['packed_rows']} rows, packing efficiency "
              f"{info['packing_efficiency']:.1%}")
        return PreparedData(rows, info)
    by_source = read_sources(config)
    data = prepare(config, by_source, hf_batch_encoder(tokenizer), rows_per_step,
                   run_dir if is_main else None)
    if is_main:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "key.txt").unlink(missing_ok=True)  # invalid until everything is written
        np.save(cache / "input_ids.npy", data.rows.input_ids)
        np.save(cache / "labels.npy", data.rows.labels)
        (cache / "summary.json").write_text(json.dumps(data.summary, indent=2) + "\n")
        (cache / "key.txt").write_text(key)
    return data


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

    return {key: torch.from_numpy(np.stack([b[key] for b in batch]).astype(np.int64))
            for key in ("input_ids", "labels")}
