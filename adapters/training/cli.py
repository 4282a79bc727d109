"""`huatuo train --config train.yaml [--section.field value ...]`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from adapters.training.config import (
    ConfigError,
    add_override_flags,
    load_config,
    overrides_from_args,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Multi-GPU / multi-node: accelerate launch --config_file "
                     "adapters/training/configs/accelerate_multi_gpu.yaml -m huatuo train "
                     "--config ... (see docs/training.md).")
    parser.add_argument("--config", type=Path, help="YAML config (see adapters/training/configs).")
    parser.add_argument("--prepare-only", action="store_true",
                        help="Only read, sample and pack the data: write data_summary.json and "
                             "source_mix.png into training.output_dir, print packing efficiency.")
    parser.add_argument("--no-export", action="store_true",
                        help="Skip the export of a servable checkpoint at the end.")
    add_override_flags(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    try:
        config = load_config(args.config, overrides_from_args(args))
    except (ConfigError, OSError) as exc:
        print(f"huatuo train: {exc}")
        return 2
    from adapters.training.readers import DataError
    from adapters.training.train import BaseModelError

    try:
        if args.prepare_only:
            return _prepare_only(config)
        from adapters.training.train import train

        train(config, export=not args.no_export)
    except DataError as exc:
        print(f"huatuo train: bad data: {exc}\n(use --data.skip_invalid true to skip such "
              "records)")
        return 1
    except BaseModelError as exc:
        print(f"huatuo train: {exc}")
        return 2
    return 0


def _prepare_only(config) -> int:
    from transformers import AutoTokenizer

    from adapters.training.dataset import load_or_prepare
    from adapters.training.train import base_model

    out = Path(config.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = base_model(config, out, True)
    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)
    rows_per_step = config.training.per_device_batch_size * \
        config.training.gradient_accumulation_steps
    load_or_prepare(config.data, tokenizer, base, rows_per_step, out, True)
    print(f"wrote {out / 'data_summary.json'} and {out / 'source_mix.png'}")
    return 0
