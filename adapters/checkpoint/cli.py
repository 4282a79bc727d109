"""`huatuo convert SRC DST`: published HuatuoGPT2 checkpoint -> Llama layout vLLM serves.

Exit status (the convention of every `huatuo` subcommand): 0 done; 1 the checkpoint cannot be
converted, or the conversion failed midway (DST is left untouched); 2 bad usage (bad flags, a
missing SRC, a non-empty DST without --force, DST that is SRC or a file); 130 interrupted.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from adapters.checkpoint.convert import (
    DEFAULT_SHARD_BYTES,
    DTYPES,
    Options,
    check_destination,
    convert,
)
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import parse_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="Published checkpoint directory (config.json, "
                        "*.safetensors or *.bin, optionally sharded with an index, "
                        "tokenizer.model).")
    parser.add_argument("dst", type=Path, help="Output directory (created; must be empty "
                        "unless --force).")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="Dtype of the output weights; auto keeps the source dtype "
                        "(float16 for GPTQ checkpoints). Default: auto.")
    parser.add_argument("--force", action="store_true",
                        help="Replace a non-empty DST (only once the new conversion succeeded).")
    parser.add_argument("--verify", action="store_true",
                        help="Before publishing DST, run a float32 forward pass through the "
                        "source (as its published architecture) and the output (as Llama) and "
                        "fail unless the logits agree.")
    parser.add_argument("--shard-size", default=str(DEFAULT_SHARD_BYTES // 10**9) + "GB",
                        help="Largest output shard, e.g. 5GB, 2GiB, 500MB. Default: 5GB.")
    parser.add_argument("--no-hash", action="store_true",
                        help="Skip the sha256 of the source files in conversion.json "
                        "(sizes are still recorded).")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")


def _interrupt_on_sigterm() -> None:
    # SIGTERM unwinds like Ctrl-C, so the staging directory is removed and DST is untouched.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _error(message: str, code: int) -> int:
    message = " ".join(str(message).split())  # one line
    print(f"huatuo convert: error: {message}", file=sys.stderr)
    return code


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Problems with SRC and DST themselves (bad usage, exit 2), found before any work."""
    if not args.src.exists():
        return f"SRC {args.src}: no such directory"
    if not args.src.is_dir():
        return f"SRC {args.src}: not a directory (pass the checkpoint directory)"
    try:
        check_destination(args.dst, args.src, args.force)
    except ConversionError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> int:
    try:
        shard_bytes = parse_size(args.shard_size)
    except ValueError as exc:
        return _error(f"--shard-size: {exc}", 2)
    problem = _usage_problem(args)
    if problem:
        return _error(problem, 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _interrupt_on_sigterm()
    options = Options(dtype=args.dtype, force=args.force, shard_bytes=shard_bytes,
                      verify=args.verify, progress=not args.quiet and sys.stderr.isatty(),
                      hash_sources=not args.no_hash)
    try:
        manifest = convert(args.src, args.dst, options)
    except ConversionError as exc:
        return _error(str(exc), 1)
    except OSError as exc:  # disk full, permissions, ... midway: DST is not published
        return _error(f"{exc}; {args.dst} was not written", 1)
    except KeyboardInterrupt:
        print(f"huatuo convert: interrupted; {args.dst} was not written.", file=sys.stderr)
        return 130
    source = manifest["source"]
    print(f"Converted {args.src} ({source['layout']}, {source['dtype']}) -> {args.dst} "
          f"({manifest['output']['dtype']}, {len(manifest['output']['files'])} shards, "
          f"{manifest['seconds']:.1f} s). Manifest: {args.dst / 'conversion.json'}")
    if manifest.get("verification"):
        v = manifest["verification"]
        print(f"Verified: max |logit diff| {v['max_abs_logit_diff']:.3g} "
              f"(tolerance {v['tolerance']:.3g}).")
    print(f"Serve it with: huatuo serve --model {args.dst}")
    return 0
