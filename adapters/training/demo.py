"""The trained demo model: a tiny Llama trained on the bundled sample, on the CPU, once.

`make demo` calls `ensure_trained_demo_model(cache_dir)`; the first call trains with
configs/tiny-cpu.yaml (about 4 minutes on a busy 2-core VM, see docs/training.md) and caches the
exported checkpoint; later calls return it at once. The cache key is a hash of the config and
the sample data, so editing either retrains.

    python -m adapters.training.demo [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
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


def ensure_trained_demo_model(cache_dir: Path) -> Path:
    """Train (once, atomically) and return the servable demo checkpoint directory."""
    target = Path(cache_dir) / f"trained-demo-{demo_key()}"
    if (target / "config.json").exists():
        return target
    logger.info("Training the demo model on the bundled sample (CPU, about a minute) into %s",
                target)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("HUATUO_CACHE_DIR",
                                                    Path.home() / ".cache" / "huatuo-serve")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(ensure_trained_demo_model(args.cache_dir))


if __name__ == "__main__":
    main()
