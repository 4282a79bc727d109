"""Bad inputs get clear errors naming the file and tensor; DST is never left half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters.checkpoint import convert as convert_module
from adapters.checkpoint.convert import Options, convert
from adapters.checkpoint.errors import ConversionError
from tests.support.published_checkpoints import (
    build_baichuan2_7b,
    build_baichuan2_13b,
    build_yi,
)

QUIET = Options(progress=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_baichuan2_7b(tmp_path_factory.mktemp("src") / "b", shards=2)


@pytest.fixture
def src(published: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(published, tmp_path / "src"))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".huatuo-convert-"))


def test_truncated_shard(src: Path, tmp_path: Path) -> None:
    shard = src / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ConversionError,
                       match=r"model-00002-of-00002\.safetensors: truncated file: tensor '"):
        convert(src, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_missing_shard(src: Path, tmp_path: Path) -> None:
    (src / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="missing.*model-00001-of-00002.safetensors"):
        convert(src, tmp_path / "out", QUIET)


def test_missing_config(src: Path, tmp_path: Path) -> None:
    (src / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"config\.json: missing"):
        convert(src, tmp_path / "out", QUIET)


def test_missing_tokenizer(src: Path, tmp_path: Path) -> None:
    (src / "tokenizer.model").unlink()
    with pytest.raises(ConversionError, match="no tokenizer found"):
        convert(src, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def _edit_tensor(src: Path, name: str, tensor: torch.Tensor | None) -> None:
    for path in src.glob("*.safetensors"):
        tensors = load_file(str(path))
        if name in tensors:
            if tensor is None:
                del tensors[name]
            else:
                tensors[name] = tensor
            save_file(tensors, str(path), metadata={"format": "pt"})
            index = src / "model.safetensors.index.json"
            data = json.loads(index.read_text())
            if tensor is None:
                del data["weight_map"][name]
            index.write_text(json.dumps(data))
            return
    assert tensor is not None, name
    # A new tensor: add it to the first shard and the index.
    path = sorted(src.glob("*.safetensors"))[0]
    save_file({**load_file(str(path)), name: tensor}, str(path), metadata={"format": "pt"})
    index = src / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"][name] = path.name
    index.write_text(json.dumps(data))


def test_mismatched_w_pack_shape(src: Path, tmp_path: Path) -> None:
    _edit_tensor(src, "model.layers.1.self_attn.W_pack.weight", torch.zeros(300, 128))
    with pytest.raises(ConversionError,
                       match=r"safetensors: tensor 'model\.layers\.1\.self_attn\.W_pack\.weight' "
                             r"has shape \[300, 128\].*\[384, 128\]"):
        convert(src, tmp_path / "out", QUIET)


def test_mismatched_mlp_shape(src: Path, tmp_path: Path) -> None:
    _edit_tensor(src, "model.layers.0.mlp.up_proj.weight", torch.zeros(100, 128))
    with pytest.raises(ConversionError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight'"
                                              r".*\[100, 128\].*\[336, 128\]"):
        convert(src, tmp_path / "out", QUIET)


def test_missing_tensor(src: Path, tmp_path: Path) -> None:
    _edit_tensor(src, "model.layers.1.mlp.down_proj.weight", None)
    with pytest.raises(ConversionError, match=r"no tensor for 'model\.layers\.1\.mlp\.down_proj"):
        convert(src, tmp_path / "out", QUIET)


def test_unknown_extra_tensor_is_not_dropped_silently(src: Path, tmp_path: Path) -> None:
    _edit_tensor(src, "model.layers.0.self_attn.o_proj.bias", torch.zeros(128))
    with pytest.raises(ConversionError, match=r"'model\.layers\.0\.self_attn\.o_proj\.bias'.*"
                                              "not part of the baichuan2 layout"):
        convert(src, tmp_path / "out", QUIET)


def test_baichuan2_13b_refused(tmp_path: Path) -> None:
    src = build_baichuan2_13b(tmp_path / "src")
    with pytest.raises(ConversionError, match="ALiBi"):
        convert(src, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()


def test_non_empty_destination_needs_force(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="not empty; pass --force"):
        convert(src, dst, QUIET)
    assert (dst / "precious.txt").read_text() == "keep me"
    convert(src, dst, Options(progress=False, force=True))
    assert not (dst / "precious.txt").exists() and (dst / "conversion.json").exists()
    assert not leftovers(tmp_path)


def test_empty_destination_is_fine(src: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    convert(src, tmp_path / "out", QUIET)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()


def test_interruption_leaves_no_destination(src: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    produced = []
    original = convert_module.RuleRunner.produce

    def interrupted(self, spec):  # Ctrl-C (or SIGTERM, see cli.py) in the middle of the weights
        produced.append(spec.name)
        if len(produced) == 5:
            raise KeyboardInterrupt
        return original(self, spec)

    monkeypatch.setattr(convert_module.RuleRunner, "produce", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "out", QUIET)
    assert not (tmp_path / "out").exists()
    assert not leftovers(tmp_path)


def test_failure_with_force_keeps_the_old_destination(src: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dst = tmp_path / "out"
    convert(src, dst, QUIET)
    before = sorted(p.name for p in dst.iterdir())

    def broken(*args, **kwargs):
        raise ConversionError("simulated failure while writing metadata")

    monkeypatch.setattr(convert_module, "_write_metadata", broken)
    with pytest.raises(ConversionError, match="simulated"):
        convert(src, dst, Options(progress=False, force=True))
    assert sorted(p.name for p in dst.iterdir()) == before
    assert not leftovers(tmp_path)


def test_stale_staging_of_a_killed_run_is_removed(src: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".huatuo-convert-out-999999999"  # no such process
    stale.mkdir()
    (stale / "model-00001-of-00002.safetensors").write_bytes(b"half")
    convert(src, tmp_path / "out", QUIET)
    assert not stale.exists()


def test_yi_with_unknown_norm_variant(tmp_path: Path) -> None:
    src = build_yi(tmp_path / "src")
    tensors = load_file(str(src / "model.safetensors"))
    tensors["model.layers.0.ln3.weight"] = torch.ones(128)
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"'model\.layers\.0\.ln3\.weight'.*yi layout"):
        convert(src, tmp_path / "out", QUIET)


def test_destination_created_meanwhile_is_not_clobbered(src: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas converting into one cache: the second keeps the first one's result."""
    dst = tmp_path / "out"
    original = convert_module._write_metadata

    def racing(out, plan, target):
        original(out, plan, target)
        dst.mkdir()
        (dst / "conversion.json").write_text("{}")  # the other process finished first

    monkeypatch.setattr(convert_module, "_write_metadata", racing)
    with pytest.raises(ConversionError, match="created by someone else"):
        convert(src, dst, QUIET)
    assert [p.name for p in dst.iterdir()] == ["conversion.json"]
    assert not leftovers(tmp_path)
