"""`huatuo convert` as a command, and the automatic conversion behind `huatuo serve --model`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.checkpoint.auto import prepare_for_serving, source_key
from tests.support.published_checkpoints import build_baichuan2_13b, build_yi

ROOT = Path(__file__).resolve().parents[2]


def huatuo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "huatuo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def yi_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_yi(tmp_path_factory.mktemp("yi") / "HuatuoGPT2-34B", fmt="bin", shards=2)


def test_convert_command(yi_src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    result = huatuo("convert", str(yi_src), str(dst), "--shard-size", "200KB", "--verify",
                    "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    assert "Converted" in result.stdout and "(yi, float32)" in result.stdout
    assert "Verified: max |logit diff|" in result.stdout
    assert f"huatuo serve --model {dst}" in result.stdout
    manifest = json.loads((dst / "conversion.json").read_text())
    assert manifest["output"]["dtype"] == "bfloat16" and len(manifest["output"]["files"]) > 1
    # A second run refuses to overwrite: bad usage (exit status 2), one line with the fix.
    again = huatuo("convert", str(yi_src), str(dst))
    assert again.returncode == 2 and "pass --force" in again.stderr
    assert len(again.stderr.splitlines()) == 1 and "Traceback" not in again.stderr


def test_convert_command_errors(tmp_path: Path) -> None:
    src = build_baichuan2_13b(tmp_path / "b13")
    result = huatuo("convert", str(src), str(tmp_path / "out"))
    assert result.returncode == 1
    assert "error:" in result.stderr and "ALiBi" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    bad_size = huatuo("convert", str(src), str(tmp_path / "out"), "--shard-size", "lots")
    assert bad_size.returncode == 2 and "--shard-size" in bad_size.stderr
    missing = huatuo("convert", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert missing.returncode == 2 and "nowhere: no such directory" in missing.stderr
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


def test_convert_help_lists_the_flags() -> None:
    result = huatuo("convert", "--help")
    assert result.returncode == 0
    for flag in ("--dtype", "--force", "--verify", "--shard-size", "--no-hash"):
        assert flag in result.stdout


def test_prepare_for_serving_converts_once(yi_src: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="huatuo.convert"):
        first = prepare_for_serving(yi_src, cache)
    assert first.parent == cache / "converted"
    assert first.name.startswith("HuatuoGPT2-34B-")
    assert json.loads((first / "config.json").read_text())["architectures"] == [
        "LlamaForCausalLM"]
    assert f"converting it once into {first}" in caplog.text
    stamp = (first / "conversion.json").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="huatuo.convert"):
        assert prepare_for_serving(yi_src, cache) == first
    assert "cached in" in caplog.text
    assert (first / "conversion.json").stat().st_mtime_ns == stamp  # reused, not redone


def test_prepare_for_serving_keeps_llama_checkpoints(tmp_path: Path) -> None:
    from huatuogpt2.demo_checkpoint import build_tiny_llama

    src = build_tiny_llama(tmp_path / "llama")
    assert prepare_for_serving(src, tmp_path / "cache") == src
    assert not (tmp_path / "cache").exists()


def test_prepare_for_serving_refuses_clearly(tmp_path: Path) -> None:
    src = build_baichuan2_13b(tmp_path / "b13")
    with pytest.raises(SystemExit, match="--model .*b13: .*ALiBi"):
        prepare_for_serving(src, tmp_path / "cache")


def test_cache_key_follows_the_source_files(yi_src: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(yi_src, tmp_path / "copy"))
    key = source_key(copy)
    assert source_key(copy) == key
    config = copy / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    assert source_key(copy) != key


def test_sigterm_mid_conversion_leaves_no_destination(tmp_path: Path) -> None:
    # Big enough (about 300 MB) that the weights take a while to write.
    src = build_yi(tmp_path / "big", hidden=1024, heads=16, kv_heads=4, layers=6)
    dst = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "huatuo", "convert", str(src), str(dst),
                             "--shard-size", "20MB", "--no-hash"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        # Signal once the first output shard is on disk, i.e. mid-way through the weights.
        if list(tmp_path.glob(".huatuo-convert-out-*/model-00001-*.safetensors")):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not dst.exists()
    assert not list(tmp_path.glob(".huatuo-convert-*"))
