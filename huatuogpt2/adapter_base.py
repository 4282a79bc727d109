"""Which base checkpoint a LoRA adapter was trained on: recorded by `huatuo train`'s export,
checked by `huatuo serve --lora`.

An adapter applied to another base runs without any error and answers nonsense, so the export
writes `huatuo_base.json` beside `adapter_config.json` (PEFT ignores files it does not know),
and the server compares it with the checkpoint it serves.

The fingerprint must be cheap for a 64 GB checkpoint: it hashes `config.json`'s architecture
fields, the safetensors headers (every tensor's name, dtype, shape and byte offsets) and a
sample of each file's bytes (the first and last MiB of its data), never all the weights. The
headers alone would not tell two fine-tunes of one base apart (same names and shapes); the
sampled bytes do, since training changes every tensor. It catches mistakes (another model, size,
vocabulary, conversion or fine-tune), not a forgery.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

BASE_FILE = "huatuo_base.json"
# config.json fields that decide the weights' layout; others (use_cache, torch_dtype) vary
# between equivalent copies of one checkpoint.
_CONFIG_FIELDS = ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
                  "rope_theta", "tie_word_embeddings")


def read_config(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / "config.json").read_text())


_SAMPLE_BYTES = 1 << 20


def _hash_safetensors(path: Path, digest) -> None:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        header.pop("__metadata__", None)  # free-form notes (e.g. the writer's name)
        digest.update(json.dumps(header, sort_keys=True).encode())
        digest.update(f.read(_SAMPLE_BYTES))
        size = path.stat().st_size
        f.seek(max(8 + length, size - _SAMPLE_BYTES))
        digest.update(f.read(_SAMPLE_BYTES))


def base_fingerprint(checkpoint: Path) -> str:
    """sha256 of config.json's layout fields, every safetensors header and sampled bytes."""
    checkpoint = Path(checkpoint)
    config = read_config(checkpoint)
    digest = hashlib.sha256()
    digest.update(json.dumps({k: config.get(k) for k in _CONFIG_FIELDS},
                             sort_keys=True).encode())
    for path in sorted(checkpoint.glob("*.safetensors")):
        digest.update(path.name.encode())
        _hash_safetensors(path, digest)
    return digest.hexdigest()


def base_record(checkpoint: Path) -> dict:
    """What the export writes into `huatuo_base.json`."""
    config = read_config(checkpoint)
    return {"fingerprint": base_fingerprint(checkpoint),
            "hidden_size": config.get("hidden_size"),
            "vocab_size": config.get("vocab_size"),
            "base_model": str(checkpoint)}


def write_base_record(adapter_dir: Path, checkpoint: Path) -> None:
    (Path(adapter_dir) / BASE_FILE).write_text(
        json.dumps(base_record(checkpoint), indent=2) + "\n")
