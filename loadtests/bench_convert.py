"""Benchmark `huatuo convert` on a synthetic multi-GB Baichuan2-7B-shaped checkpoint.

Not a test: it prints figures. Throughput is source bytes per second of wall time; the
converter process's fixed start-up (interpreter, imports of torch and the converter, argument
parsing: timed as `huatuo convert --help` right before each run) is also reported, with the
per-byte throughput that excludes it, since it does not grow with the checkpoint. Peak RSS is
the converter process's high-water mark (VmHWM via wait4), divided by the largest shard
(input or output). Runs start with the source evicted from the page cache
(posix_fadvise DONTNEED), so they read from disk; a plain cold read and a cold copy of the same
files give the disk's own speed for comparison.

    python -m loadtests.bench_convert --size-gb 5 --workdir /tmp/convert-bench [--record]

`--record` writes the table as docs/results/convert-speed.json for `huatuo figures`.
It drives the converter as a user does, through `huatuo convert` in a child process.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
# Baichuan2-7B's real dimensions; the layer count sets the size.
HIDDEN, INTERMEDIATE, VOCAB = 4096, 11008, 125696


def _layer_bytes() -> int:
    return 2 * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN)


def _train_tokenizer(path: Path) -> None:
    import sentencepiece as spm

    text = ["头痛发烧咳嗽高血压糖尿病 headache fever cough 0123456789"] * 200
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=300, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    path.write_bytes(model.getvalue())


def build_source(directory: Path, layers: int, fmt: str, shard_bytes: int) -> None:
    """A Baichuan2-7B-layout checkpoint (bf16, W_pack, NormHead) of `layers` layers."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
              "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_attention_heads": 32, "num_hidden_layers": layers, "vocab_size": VOCAB,
              "max_position_embeddings": 4096, "model_max_length": 4096, "rms_norm_eps": 1e-6,
              "z_loss_weight": 0, "torch_dtype": "bfloat16", "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu"}
    (directory / "config.json").write_text(json.dumps(config))
    _train_tokenizer(directory / "tokenizer.model")
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes.update({
            p + "self_attn.W_pack.weight": (3 * HIDDEN, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
        })
    shapes.update({"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)})
    generator = torch.Generator().manual_seed(0)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    # The file names the published checkpoints use.
    stem, suffix, index = (("model", "safetensors", "model.safetensors.index.json")
                           if fmt == "safetensors"
                           else ("pytorch_model", "bin", "pytorch_model.bin.index.json"))
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{suffix}"
        tensors = {n: (torch.randn(shapes[n], generator=generator) * 0.02).to(torch.bfloat16)
                   for n in names}
        if fmt == "safetensors":
            save_file(tensors, directory / file, metadata={"format": "pt"})
        else:
            torch.save(tensors, directory / file)
        weight_map.update(dict.fromkeys(names, file))
    (directory / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def evict(directory: Path) -> None:
    """Drop the files' pages from the page cache, so the next read comes from disk."""
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno()) if os.access(path, os.W_OK) else None
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def weight_bytes(directory: Path) -> tuple[int, int]:
    sizes = [p.stat().st_size for p in directory.iterdir()
             if p.suffix in (".safetensors", ".bin")]
    return sum(sizes), max(sizes)


# Peak RSS is read inside the converter process: a child's rusage ru_maxrss would include the
# parent's memory at fork time (Linux carries the high-water mark across fork and exec).
_CONVERT = (
    "import re, sys\n"
    "from huatuo.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "print('PEAK_RSS_KB', hwm, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def startup_seconds() -> float:
    """Wall seconds of the converter's fixed start-up: the same child process, interpreter and
    imports as a conversion, stopping at `--help` before the first byte is read."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", _CONVERT, "convert", "--help"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def run_convert(src: Path, dst: Path, extra: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one `huatuo convert` process."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _CONVERT, "convert", str(src), str(dst), "--force", "--quiet",
         *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"convert failed: {result.stderr}")
    peak = int(re.search(r"PEAK_RSS_KB (\d+)", result.stderr).group(1))
    return seconds, peak * 1024


def baseline_rss() -> int:
    """Peak RSS of a process that only imports what the converter imports."""
    code = ("import re, adapters.checkpoint.convert, tokenizers, sentencepiece\n"
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return int(out.stdout) * 1024


def disk_baselines(src: Path, scratch: Path) -> dict[str, float]:
    total, _ = weight_bytes(src)
    evict(src)
    started = time.monotonic()
    for path in src.iterdir():
        with path.open("rb") as f:
            while f.read(64 << 20):
                pass
    read = total / (time.monotonic() - started) / 1e9
    evict(src)
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for path in src.iterdir():
        shutil.copyfile(path, scratch / path.name)
        with (scratch / path.name).open("rb+") as f:
            os.fsync(f.fileno())
    copy = total / (time.monotonic() - started) / 1e9
    shutil.rmtree(scratch)
    return {"cold_read_gbps": read, "cold_copy_gbps": copy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=5.0,
                        help="Approximate source size (default %(default)s: about 5 minutes "
                        "on a 2-core machine with a 0.3 GB/s disk).")
    parser.add_argument("--source-shard-size-gb", type=float, default=2.0)
    parser.add_argument("--shard-size", default="2GB", help="Output shard size.")
    parser.add_argument("--formats", default="safetensors,bin")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/huatuo-convert-bench"))
    parser.add_argument("--keep", action="store_true", help="Keep the synthetic checkpoints.")
    parser.add_argument("--record", action="store_true",
                        help="Record the table for the docs (docs/results/convert-speed.json).")
    args = parser.parse_args(argv)
    formats = args.formats.split(",")
    fixed = 2 * 2 * VOCAB * HIDDEN
    layers = max(1, round((args.size_gb * 1e9 - fixed) / _layer_bytes()))
    size_gb = (fixed + layers * _layer_bytes()) / 1e9  # at least the embeddings and one layer
    # Per format: build, then per mode a cold read, a cold copy (read + write) and the
    # conversion (read + write): about 6 reads and 4 writes of the source, at ~0.2 GB/s here.
    expected = size_gb * len(formats) * 11 / 0.2
    print(f"expected duration: about {expected / 60:.0f} min at 0.2 GB/s "
          f"({size_gb:.1f} GB x {len(formats)} formats x 2 modes)", flush=True)
    base = baseline_rss()
    print(f"machine: {os.cpu_count()} CPUs; synthetic Baichuan2-7B-shaped checkpoint, bf16, "
          f"{layers} layers; converter import baseline RSS {base / 1e9:.2f} GB")
    results = []
    try:
        for fmt in formats:
            src = args.workdir / f"src-{fmt}"
            if not (src / "config.json").exists():
                print(f"building {src} ...", flush=True)
                build_source(src, layers, fmt, int(args.source_shard_size_gb * 1e9))
            total, largest_in = weight_bytes(src)
            for label, extra in (("sha256 manifest", []), ("--no-hash", ["--no-hash"])):
                # The disk is shared and noisy: measure its own speed right before each run.
                disk = disk_baselines(src, args.workdir / "copy")
                print(f"disk now: cold read {disk['cold_read_gbps']:.2f} GB/s, cold copy "
                      f"(read + write + fsync) {disk['cold_copy_gbps']:.2f} GB/s", flush=True)
                dst = args.workdir / "out"
                startup = startup_seconds()
                evict(src)
                seconds, peak = run_convert(src, dst, ["--shard-size", args.shard_size, *extra])
                _, largest_out = weight_bytes(dst)
                row = result_row(fmt, label, total, seconds, startup, peak, largest_in,
                                 largest_out, disk)
                results.append(row)
                print(f"{fmt:<11} {label:<16} {total / 1e9:5.2f} GB in {seconds:6.1f} s = "
                      f"{row['gbps']:.2f} GB/s ({row['vs_cold_read']:.2f} x cold read, "
                      f"{row['vs_cold_copy']:.2f} x cold copy); start-up {startup:.1f} s, "
                      f"per byte after it {row['per_byte_gbps']:.2f} GB/s "
                      f"({row['per_byte_vs_cold_read']:.2f} x cold read, "
                      f"{row['per_byte_vs_cold_copy']:.2f} x cold copy); peak RSS "
                      f"{peak / 1e9:.2f} GB = {row['rss_over_largest_shard']:.2f} x largest "
                      f"shard ({max(largest_in, largest_out) / 1e9:.2f} GB)", flush=True)
                shutil.rmtree(dst)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.record:
        from figures.record import write_result

        path = write_result(RESULT_NAME, markdown(results), data={"results": results},
                            inline={"source_gb": f"{results[0]['source_gb']:.2f}"})
        print(f"recorded {path}; run `huatuo figures`")
    return 0


RESULT_NAME = "convert-speed"


def result_row(fmt: str, mode: str, total: int, seconds: float, startup: float, peak: int,
               largest_in: int, largest_out: int, disk: dict[str, float]) -> dict:
    """One measured run, with its throughput against the disk's own speeds: overall, and per
    byte once the fixed start-up is paid."""
    gbps = total / seconds / 1e9
    per_byte = total / max(seconds - startup, 1e-9) / 1e9
    return {"format": fmt, "mode": mode, "source_gb": total / 1e9, "seconds": seconds,
            "gbps": gbps, "startup_seconds": startup, "per_byte_gbps": per_byte,
            "peak_rss_gb": peak / 1e9, "largest_input_shard_gb": largest_in / 1e9,
            "largest_output_shard_gb": largest_out / 1e9,
            "rss_over_largest_shard": peak / max(largest_in, largest_out), **disk,
            "vs_cold_read": gbps / disk["cold_read_gbps"],
            "vs_cold_copy": gbps / disk["cold_copy_gbps"],
            "per_byte_vs_cold_read": per_byte / disk["cold_read_gbps"],
            "per_byte_vs_cold_copy": per_byte / disk["cold_copy_gbps"]}


def markdown(results: list[dict]) -> str:
    lines = ["| source | manifest hashes | converter | x cold read | x cold copy "
             "| start-up | per byte after start-up | per byte x cold read "
             "| per byte x cold copy "
             "| cold read just before | cold copy (read + write + fsync) "
             "| peak RSS / largest shard |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['format']} | {r['mode']} | {r['gbps']:.2f} GB/s "
                     f"| {r['vs_cold_read']:.2f} | {r['vs_cold_copy']:.2f} "
                     f"| {r['startup_seconds']:.1f} s | {r['per_byte_gbps']:.2f} GB/s "
                     f"| {r['per_byte_vs_cold_read']:.2f} | {r['per_byte_vs_cold_copy']:.2f} "
                     f"| {r['cold_read_gbps']:.2f} GB/s | {r['cold_copy_gbps']:.2f} GB/s "
                     f"| {r['rss_over_largest_shard']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
