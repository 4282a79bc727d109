"""`huatuo serve --model <published checkpoint>`: convert once into the cache, then serve that.

The cache key hashes the source's file names, sizes and modification times, so a changed
checkpoint converts again and an unchanged one is reused at once.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from adapters.checkpoint import CONVERTER_VERSION
from adapters.checkpoint.detect import guess_layout, read_config
from adapters.checkpoint.errors import ConversionError
from huatuogpt2.staging import build_atomically

logger = logging.getLogger("huatuo.convert")

# Fast paths on config.json alone: these never need the weights' names.
_LLAMA_ARCHITECTURES = {"LlamaForCausalLM"}


def source_key(path: Path) -> str:
    digest = hashlib.sha256(f"converter-{CONVERTER_VERSION}".encode())
    for entry in sorted(p for p in path.iterdir() if p.is_file()):
        stat = entry.stat()
        digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def needs_conversion(path: Path) -> bool:
    config = read_config(path)
    architecture = (config.get("architectures") or [""])[0]
    if architecture in _LLAMA_ARCHITECTURES and config.get("model_type") == "llama":
        return False
    from adapters.checkpoint.io import SourceCheckpoint

    return guess_layout(config, list(SourceCheckpoint(path).tensors)) != "llama"


def prepare_for_serving(path: Path, cache_dir: Path) -> Path:
    """`path` itself for a Llama-layout checkpoint; otherwise its cached conversion."""
    try:
        if not needs_conversion(path):
            return path
        target = Path(cache_dir) / "converted" / f"{path.resolve().name}-{source_key(path)}"
        if (target / "conversion.json").exists():
            logger.info("Serving %s through its conversion cached in %s.", path, target)
            return target
        logger.info("%s is a published layout vLLM cannot load; converting it once into %s "
                    "(this takes a while for large models).", path, target)
        from adapters.checkpoint.convert import Options, convert

        def build(staging: Path) -> Path:
            convert(path, staging / "model", Options(progress=True))
            return staging / "model"

        # A replica sharing this cache may finish the same conversion first: then use it.
        build_atomically(target, build, done_marker="conversion.json")
        logger.info("Conversion done; serving %s.", target)
        return target
    except ConversionError as exc:
        raise SystemExit(f"--model {path}: {exc}") from exc
