"""Streaming reader/writer of the converter: sizes, shard planning, safetensors round trip,
and the clear errors for truncated files and incomplete indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import (
    OutputTensor,
    SourceCheckpoint,
    parse_size,
    plan_shards,
    write_shards,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30), ("1048576", 1048576),
    ("1.5kb", 1500), ("10 KiB", 10240),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "5 parsecs", "-1GB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_plan_shards_respects_the_limit_and_keeps_order() -> None:
    tensors = [OutputTensor(f"t{i}", torch.float32, (n,)) for i, n in enumerate([10, 10, 30, 5])]
    shards = plan_shards(tensors, max_shard_bytes=80)
    assert [[t.name for t in s] for s in shards] == [["t0", "t1"], ["t2"], ["t3"]]
    # A tensor larger than the limit gets a shard of its own rather than failing.
    assert [len(s) for s in plan_shards(tensors, 1)] == [1, 1, 1, 1]


def test_write_shards_round_trip(tmp_path: Path) -> None:
    values = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(12, dtype=torch.int32).reshape(3, 4),
        "d": torch.tensor(1.5, dtype=torch.float16),
    }
    specs = [OutputTensor(n, v.dtype, tuple(v.shape)) for n, v in values.items()]
    files = write_shards(tmp_path, plan_shards(specs, 60), lambda s: values[s.name])
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(values)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in values.values())
    loaded = {}
    for file in files:  # the official reader accepts our files
        loaded.update(load_file(str(tmp_path / file)))
    for name, value in values.items():
        assert torch.equal(loaded[name], value), name
    # ... and so does ours
    source = SourceCheckpoint(tmp_path)
    assert torch.equal(source.load("b"), values["b"])


def test_truncated_safetensors_names_file_and_tensor(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"first": torch.zeros(4), "second": torch.ones(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=r"model\.safetensors: truncated.*'second'"):
        SourceCheckpoint(tmp_path)


def test_truncated_header(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x10\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ConversionError, match="truncated safetensors file"):
        SourceCheckpoint(tmp_path)


def test_index_listing_a_missing_shard(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ConversionError, match="missing.*model-00002-of-00002.safetensors"):
        SourceCheckpoint(tmp_path)


def test_index_promising_a_tensor_the_shard_lacks(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(ConversionError, match="tensor 'b'"):
        SourceCheckpoint(tmp_path)


def test_torch_bin_files_are_read(tmp_path: Path) -> None:
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "pytorch_model.bin")
    torch.save({"x": 1}, tmp_path / "training_args.bin")  # not a weight file
    source = SourceCheckpoint(tmp_path)
    assert list(source.tensors) == ["w"]
    assert torch.equal(source.load("w"), torch.arange(6.0).reshape(2, 3))


def test_truncated_bin_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin: cannot read.*truncated"):
        SourceCheckpoint(tmp_path)


def test_no_weights(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no weights found"):
        SourceCheckpoint(tmp_path)
