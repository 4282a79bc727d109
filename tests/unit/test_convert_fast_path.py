"""The converter's fast paths write exactly what the plain path writes: outputs copied file to
file (`copy_file_range`, or its read/write fallback) and the NormHead normalisation computed in
chunks of rows with one reused float32 buffer."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from adapters.checkpoint import io as checkpoint_io
from adapters.checkpoint.baichuan import normalise_rows
from adapters.checkpoint.convert import Options, RuleRunner, convert
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import (
    FileRange,
    OutputTensor,
    SourceCheckpoint,
    plan_shards,
    write_shards,
)
from tests.support.published_checkpoints import build_baichuan2_7b

QUIET = Options(progress=False, hash_sources=False)


def _source(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    values = {
        "a": torch.arange(24, dtype=torch.float32).reshape(6, 4),
        "b": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
        "c": torch.arange(12, dtype=torch.int32),
    }
    path = tmp_path / "src" / "model.safetensors"
    path.parent.mkdir()
    save_file(values, str(path))
    return path, values


def _ranges_and_tensors(path: Path) -> tuple[list[OutputTensor], dict, dict]:
    """The same outputs once as byte ranges of the source file, once as tensors."""
    source = SourceCheckpoint(path.parent)
    a, b, c = (source.tensors[n] for n in "abc")
    specs = [OutputTensor("a.top", torch.float32, (2, 4)), OutputTensor("a.rest", torch.float32,
                                                                        (4, 4)),
             OutputTensor("b", torch.bfloat16, (3,)), OutputTensor("c", torch.int32, (12,))]
    ranges = {"a.top": FileRange(path, a.offset, 32), "a.rest": FileRange(path, a.offset + 32, 64),
              "b": FileRange(path, b.offset, 6), "c": FileRange(path, c.offset, 48)}
    loaded = {n: source.load(n) for n in "abc"}
    tensors = {"a.top": loaded["a"][:2], "a.rest": loaded["a"][2:], "b": loaded["b"],
               "c": loaded["c"]}
    return specs, ranges, tensors


def _written(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_file_ranges_write_the_same_bytes_as_tensors(tmp_path: Path, kernel_copy: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _source(tmp_path)
    specs, ranges, tensors = _ranges_and_tensors(path)
    if not kernel_copy:  # a filesystem pair without copy_file_range: the read/write fallback
        def refuse(*args: object) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    (tmp_path / "ranges").mkdir()
    (tmp_path / "tensors").mkdir()
    write_shards(tmp_path / "ranges", plan_shards(specs, 70), lambda s: ranges[s.name])
    write_shards(tmp_path / "tensors", plan_shards(specs, 70), lambda s: tensors[s.name])
    assert _written(tmp_path / "ranges") == _written(tmp_path / "tensors")
    assert len(_written(tmp_path / "ranges")) == 4  # three shards and the index


def test_fallback_copies_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = _source(tmp_path)
    specs, ranges, tensors = _ranges_and_tensors(path)
    monkeypatch.delattr(os, "copy_file_range")
    monkeypatch.setattr(checkpoint_io, "_FALLBACK_CHUNK", 5)  # several reads per tensor
    for out, produced in (("ranges", ranges), ("tensors", tensors)):
        (tmp_path / out).mkdir()
        write_shards(tmp_path / out, [specs], lambda s, given=produced: given[s.name])
    assert _written(tmp_path / "ranges") == _written(tmp_path / "tensors")


def test_range_past_the_end_of_a_truncated_file(tmp_path: Path) -> None:
    path, _ = _source(tmp_path)
    size = path.stat().st_size
    spec = OutputTensor("tail", torch.uint8, (16,))
    with pytest.raises(ConversionError, match=r"truncated while reading tensor 'tail'"):
        write_shards(tmp_path, [[spec]], lambda s: FileRange(path, size - 8, 16))


def _old_normalise(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The whole-matrix computation: F.normalize in float32, rounded once to `dtype`."""
    return F.normalize(weight.float(), dim=-1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 64, 1000])
def test_chunked_normalisation_is_the_whole_matrix_one_bit_for_bit(
        dtype: torch.dtype, chunk_rows: int) -> None:
    generator = torch.Generator().manual_seed(3)
    weight = (torch.randn(50, 33, generator=generator) * 0.02).to(dtype)
    weight[4] = 0  # a zero row: the 1e-12 floor of F.normalize, not a division by zero
    weight[5] = torch.tensor([3.0, 4.0] + [0.0] * 31, dtype=dtype)  # norm 5: exactly 0.6, 0.8
    expected = _old_normalise(weight, dtype)
    (got,) = normalise_rows([weight.clone()], dtype, chunk_rows=chunk_rows)
    assert got.dtype == dtype
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))
    assert torch.equal(got[4], torch.zeros(33, dtype=dtype))
    assert got[5, :2].tolist() == pytest.approx([0.6, 0.8], abs=1e-2)


def test_normalisation_into_another_dtype() -> None:
    weight = torch.randn(20, 8).to(torch.bfloat16)
    (got,) = normalise_rows([weight], torch.float32, chunk_rows=6)
    assert got.dtype == torch.float32
    assert torch.equal(got, _old_normalise(weight, torch.float32))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_baichuan2_7b(tmp_path_factory.mktemp("src") / "b", shards=2)


def test_w_pack_rows_and_copies_are_file_ranges(published: Path) -> None:
    from adapters.checkpoint.detect import plan_conversion

    source = SourceCheckpoint(published)
    plan = plan_conversion(published, source)
    runner = RuleRunner(source, plan, torch.float32)
    try:
        kinds = {rule.outputs[0].split(".")[-2]: ranges is not None
                 for rule, ranges in zip(plan.rules, runner.ranges, strict=True)}
        assert kinds["q_proj"] and kinds["o_proj"] and kinds["embed_tokens"]
        assert not kinds["lm_head"]  # NormHead: computed, not copied
        w_pack = next(i for i in source.tensors.values() if ".W_pack." in i.name)
        hidden = w_pack.shape[1]
        q, k, v = runner.ranges[next(i for i, r in enumerate(plan.rules)
                                     if r.inputs == (w_pack.name,))]
        row_block = hidden * hidden * w_pack.dtype.itemsize
        assert (q.offset, k.offset, v.offset) == tuple(w_pack.offset + i * row_block
                                                      for i in range(3))
        assert q.nbytes == k.nbytes == v.nbytes == row_block
    finally:
        runner.close()
    cast = RuleRunner(source, plan, torch.bfloat16)  # a cast is computed, never copied
    assert all(ranges is None for ranges in cast.ranges)
    cast.close()


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_conversion_is_byte_identical_to_the_tensor_path(
        published: Path, tmp_path: Path, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    options = Options(progress=False, hash_sources=False, dtype=dtype, shard_bytes=300_000)
    convert(published, tmp_path / "fast", options)
    monkeypatch.setattr(RuleRunner, "_file_ranges", lambda self, rule: None)
    convert(published, tmp_path / "plain", options)
    fast, plain = _written(tmp_path / "fast"), _written(tmp_path / "plain")
    assert fast.keys() == plain.keys() and len(fast) > 4
    for name in fast:
        if name != "conversion.json":  # holds a date and the seconds taken
            assert fast[name] == plain[name], name
