"""The trained demo model: a tiny Llama trained on the bundled sample, on the CPU, once.

`make demo` calls `ensure_trained_demo_model(cache_dir)`; the first call trains with
configs/tiny-cpu.yaml (docs/training.md has the measured time) and caches the exported
checkpoint; later calls return it at once. The cache key is a hash of the config and the sample
data, so editing either retrains.

    python -m adapters.training.demo [--cache-dir DIR]
    python -m adapters.training.demo --record   # afresh; writes docs/results/demo_training.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from huatuogpt2.staging import build_atomically

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "configs" / "tiny-cpu.yaml"
DEMO_DATA = (HERE / "data" / "sample_sft.json", HERE / "data" / "sample_unified.jsonl")
# Bump when the training code changes in a way that should retrain cached demos.
DEMO_TRAIN_VERSION = "v1"


def demo_key() -> str:
    digest = hashlib.sha256(DEMO_TRAIN_VERSION.encode())
    for path in (DEMO_CONFIG, *DEMO_DATA):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def trained_demo_dir(cache_dir: Path) -> Path:
    """Where the trained demo checkpoint is (or will be) cached."""
    return Path(cache_dir) / f"trained-demo-{demo_key()}"


def ensure_trained_demo_model(cache_dir: Path) -> Path:
    """Train (once, atomically) and return the servable demo checkpoint directory."""
    target = trained_demo_dir(cache_dir)
    if (target / "config.json").exists():
        return target
    logger.info("Training the demo model on the bundled sample (CPU) into %s", target)
    start = time.monotonic()
    build_atomically(target, _train_demo)
    logger.info("Demo model trained in %.0f s: %s", time.monotonic() - start, target)
    return target


def _train_demo(staging: Path) -> Path:
    from adapters.training.config import load_config
    from adapters.training.train import train

    config = load_config(DEMO_CONFIG, {"training.output_dir": str(staging / "run"),
                                       "export.dir": str(staging / "model")})
    train(config)
    # Keep the plots and summaries with the model: they show what it learned from.
    for name in ("loss_curve.png", "source_mix.png", "data_summary.json", "train_metrics.json"):
        if (staging / "run" / name).exists():
            shutil.copy2(staging / "run" / name, staging / "model" / name)
    return staging / "model"


def record_demo_training(cache_dir: Path | None = None) -> Path:
    """Train the demo model afresh (into `cache_dir`, which must not hold it yet, or a temporary
    one) and record how long it took, for the docs' `demo_training` figures (README.md,
    docs/training.md)."""
    from figures.record import write_result

    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="huatuo-demo-record-")))
        if (trained_demo_dir(cache_dir) / "config.json").exists():
            raise SystemExit(f"{trained_demo_dir(cache_dir)} exists: --record measures a fresh "
                             "training; give an empty --cache-dir")
        start = time.monotonic()
        model_dir = ensure_trained_demo_model(cache_dir)
        wall = time.monotonic() - start
        metrics = json.loads((model_dir / "train_metrics.json").read_text())
    markdown = (
        "| first `make demo` run | seconds |\n|---|---|\n"
        f"| data preparation, training ({metrics['steps']} steps) and export | {wall:.0f} |\n"
        f"| of which training | {metrics['seconds']:.0f} |\n\n"
        f"Training throughput: {metrics['tokens_per_s']:,.0f} tokens/s "
        f"({metrics['tokens_per_cpu_s']:,.0f} tokens per CPU-second).")
    return write_result(
        "demo_training", markdown,
        inline={"wall": f"{wall:.0f} s", "train_seconds": f"{metrics['seconds']:.0f} s",
                "tokens_per_s": f"{metrics['tokens_per_s']:,.0f}"},
        data={"wall_seconds": round(wall, 1), **metrics},
        command="python -m adapters.training.demo --record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Default: $HUATUO_CACHE_DIR or ~/.cache/huatuo-serve; with --record "
                             "a temporary directory.")
    parser.add_argument("--record", action="store_true",
                        help="Train afresh in a temporary cache and record the time taken in "
                             "docs/results/demo_training.json (run from the repository root).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.record:
        print(record_demo_training(args.cache_dir))
    else:
        print(ensure_trained_demo_model(args.cache_dir or Path(os.environ.get(
            "HUATUO_CACHE_DIR", Path.home() / ".cache" / "huatuo-serve"))))


if __name__ == "__main__":
    main()
