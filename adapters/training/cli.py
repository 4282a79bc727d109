"""`huatuo train --config train.yaml [--section.field value ...]`.

Exit status (the convention of every `huatuo` subcommand): 0 done; 1 the work failed (bad data,
a sample too long for max_seq_len with data.truncate_long_samples false, training error);
2 bad usage (bad flags or config, a missing config file, data file, base model or resume
checkpoint); 130 interrupted. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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


def _error(message: str, code: int) -> int:
    print(f"huatuo train: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    import yaml

    if args.config is not None and not args.config.is_file():
        return _error(f"--config {args.config}: no such file", 2)
    try:
        config = load_config(args.config, overrides_from_args(args))
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        return _error(" ".join(str(exc).split()), 2)
    for source in config.data.sources:
        if not Path(source.path).exists():
            return _error(f"data source {source.name!r}: {source.path}: no such file", 2)
    resume = config.training.resume
    if resume and resume != "latest" and not Path(resume).is_dir():
        return _error(f"training.resume: no checkpoint directory {resume}", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    if not sys.stderr.isatty():  # progress bars only on a terminal (read by transformers)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from adapters.training.packing import SampleTooLong
    from adapters.training.readers import DataError
    from adapters.training.train import BaseModelError

    try:
        if args.prepare_only:
            return _prepare_only(config)
        from adapters.training.train import train

        train(config, export=not args.no_export)
    except DataError as exc:
        return _error(f"bad data: {exc} (use --data.skip_invalid true to skip such records)", 1)
    except SampleTooLong as exc:
        return _error(f"{exc}; raise --data.max_seq_len or pass "
                      "--data.truncate_long_samples true to cut such samples", 1)
    except BaseModelError as exc:
        return _error(str(exc), 2)
    except KeyboardInterrupt:
        return _error("interrupted; resume with --training.resume latest", 130)
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
