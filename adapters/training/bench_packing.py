"""Packing efficiency on a training config's data, upstream greedy vs windowed best-fit.

    python -m adapters.training.bench_packing [--config adapters/training/configs/tiny-cpu.yaml]
        [--max-seq-len 512,1024,4096] [--window-rows 64] [--record]

`--record` writes the table as docs/results/training-packing.json (`huatuo figures` renders it
into docs/performance.md, and its inline figures into docs/training.md).

Reads, priority-samples and tokenises the data exactly as `huatuo train` does (for
`model.path: tiny-random` the tiny tokenizer is built in a temporary directory), then packs it
at each row length with both strategies. "bound" is the best any packing can do: every token in
the fewest whole rows (the last row is then the only partial one).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from adapters.training.config import load_config
from adapters.training.dataset import read_sources, tokenize_in_order
from adapters.training.packing import DEFAULT_WINDOW_ROWS, hf_batch_encoder, pack
from adapters.training.sampling import SourceSpec, priority_order
from huatuogpt2.checkpoint_metadata import PAD_TOKEN_ID

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny-cpu.yaml"


def measure(config_path: Path = DEFAULT_CONFIG, widths: tuple[int, ...] = (512, 1024, 4096),
            window_rows: int = DEFAULT_WINDOW_ROWS) -> list[dict]:
    """One result per (row length, strategy): rows, tokens, efficiency, bound."""
    from transformers import AutoTokenizer

    from adapters.training.train import base_model

    config = load_config(config_path, {})
    results = []
    with tempfile.TemporaryDirectory(prefix="huatuo-bench-packing-") as tmp:
        base = base_model(config, Path(tmp), True)
        encode = hf_batch_encoder(AutoTokenizer.from_pretrained(base, use_fast=True))
        by_source = read_sources(config.data)
        specs = [SourceSpec(s.name, len(by_source[s.name]), s.priority, s.epochs)
                 for s in config.data.sources]
        order = priority_order(specs, config.data.seed)
        for width in widths:
            data = dataclasses.replace(config.data, max_seq_len=width)
            samples = tokenize_in_order(order, by_source, encode, data)
            for strategy in ("greedy", "bfd"):
                rows = pack(samples, width, strategy=strategy, window_rows=window_rows)
                results.append({"max_seq_len": width, "strategy": strategy,
                                "samples": len(order), "rows": int(rows.input_ids.shape[0]),
                                "tokens": rows.real_tokens, "efficiency": rows.efficiency,
                                "bound": rows.efficiency_bound,
                                "without_emptiest_row": _without_emptiest(rows)})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--max-seq-len", default="512,1024,4096")
    parser.add_argument("--window-rows", type=int, default=DEFAULT_WINDOW_ROWS)
    parser.add_argument("--record", action="store_true",
                        help="Record the figures for the docs "
                             "(docs/results/training-packing.json).")
    args = parser.parse_args(argv)
    widths = tuple(int(w) for w in args.max_seq_len.split(","))
    results = measure(args.config, widths, args.window_rows)
    print(f"{args.config.name}: {results[0]['samples']} sample slots, "
          f"window {args.window_rows} rows")
    print(f"{'max_seq_len':>11} {'strategy':>8} {'rows':>5} {'tokens':>7} "
          f"{'efficiency':>10} {'bound':>7} {'w/o emptiest row':>16}")
    for r in results:
        print(f"{r['max_seq_len']:>11} {r['strategy']:>8} {r['rows']:>5} {r['tokens']:>7} "
              f"{r['efficiency']:>10.1%} {r['bound']:>7.1%} {r['without_emptiest_row']:>16.1%}")
    if args.record:
        from figures.record import write_result

        path = write_result(RESULT_NAME, markdown(results, args.config.name, args.window_rows),
                            inline=inline(results), data={"results": results})
        print(f"recorded {path}; run `huatuo figures`")
    return 0


RESULT_NAME = "training-packing"


def markdown(results: list[dict], config_name: str, window_rows: int) -> str:
    samples = results[0]["samples"]
    lines = [f"Data of `{config_name}` ({samples} sample slots, {results[0]['tokens']:,} "
             f"tokens), bfd windows of {window_rows} rows.", "",
             "| max_seq_len | strategy | rows | efficiency | bound | rows but the emptiest |",
             "|---:|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['max_seq_len']} | {r['strategy']} | {r['rows']} | "
                     f"{r['efficiency']:.1%} | {r['bound']:.1%} | "
                     f"{r['without_emptiest_row']:.1%} |")
    return "\n".join(lines)


def inline(results: list[dict]) -> dict[str, str]:
    """`<strategy>_<max_seq_len>` (efficiency), `<strategy>_<max_seq_len>_rows`,
    `bound_<max_seq_len>`, `samples`, `tokens`."""
    out = {"samples": str(results[0]["samples"]), "tokens": f"{results[0]['tokens']:,}"}
    for r in results:
        key = f"{r['strategy']}_{r['max_seq_len']}"
        out[key] = f"{r['efficiency']:.1%}"
        out[f"{key}_rows"] = str(r["rows"])
        out[f"{key}_rest"] = f"{r['without_emptiest_row']:.1%}"
        out[f"bound_{r['max_seq_len']}"] = f"{r['bound']:.1%}"
    return out


def _without_emptiest(rows) -> float:
    """Efficiency of all rows but the least filled one (the one partial row of a tight
    packing), i.e. what the rows that are not the remainder achieve."""
    count, width = rows.input_ids.shape
    if count < 2:
        return rows.efficiency
    emptiest = int((rows.input_ids != PAD_TOKEN_ID).sum(axis=1).min())
    return (rows.real_tokens - emptiest) / ((count - 1) * width)


if __name__ == "__main__":
    raise SystemExit(main())
