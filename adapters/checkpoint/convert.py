"""The conversion pipeline: plan, stream the tensors, tokenizer, metadata, manifest, publish.

Everything is written into a hidden staging directory next to DST and renamed into place only
at the very end, so an interrupted or failed run never leaves a half-written DST (a killed
process leaves at most the hidden staging directory, which the next run removes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.checkpoint.detect import plan_conversion, read_config
from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import (
    FileRange,
    OutputTensor,
    SourceCheckpoint,
    plan_shards,
    write_shards,
)
from adapters.checkpoint.manifest import BackgroundHasher, source_files_record, write_manifest
from adapters.checkpoint.plan import Plan, Rule
from adapters.checkpoint.tokenizer import convert_tokenizer

logger = logging.getLogger("huatuo.convert")

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DEFAULT_SHARD_BYTES = 5 * 10**9
# Tokenizer files of a source that already has a fast tokenizer (Llama layout).
FAST_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
STAGING_PREFIX = ".huatuo-convert-"
# Source bytes read ahead of the tensor being written (bounded so memory stays bounded).
PREFETCH_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Options:
    dtype: str = "auto"
    force: bool = False
    shard_bytes: int = DEFAULT_SHARD_BYTES
    verify: bool = False
    progress: bool = True
    hash_sources: bool = True


def source_dtype(source: SourceCheckpoint) -> torch.dtype:
    """The floating dtype holding most of the bytes (published checkpoints use one)."""
    sizes: dict[torch.dtype, int] = {}
    for info in source.tensors.values():
        if info.dtype.is_floating_point:
            sizes[info.dtype] = sizes.get(info.dtype, 0) + info.nbytes
    if not sizes:
        raise ConversionError(f"{source.directory}: no floating-point tensors found.")
    return max(sizes, key=sizes.__getitem__)


def _target_dtype(name: str, source: SourceCheckpoint, plan: Plan) -> torch.dtype:
    if name == "auto":
        # GPTQ kernels take float16 scales and activations.
        return torch.float16 if plan.quantization else source_dtype(source)
    if name not in DTYPES:
        raise ConversionError(f"--dtype {name!r}: choose auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


class RuleRunner:
    """Produces output tensors rule by rule, keeping only the current rule's outputs.

    An output that is a contiguous view of a safetensors input in its own dtype (a copied
    tensor, a W_pack row block) is produced as its byte range in the source file, which the
    writer copies file to file. The other rules' inputs are read into memory: a thread reads
    and transforms the following such rules with safetensors inputs (readinto and torch's
    kernels release the GIL) while the current rule is copied or written, so reads, compute
    (the NormHead fold) and writes overlap; memory grows by at most PREFETCH_BYTES or one
    rule's tensors. `.bin` inputs are memory-mapped and read by the kernel's readahead instead.
    """

    def __init__(self, source: SourceCheckpoint, plan: Plan, target: torch.dtype) -> None:
        self.source = source
        self.target = target
        self.rules = plan.rules
        self.index_of = {name: i for i, rule in enumerate(plan.rules) for name in rule.outputs}
        self.ranges = [self._file_ranges(rule) for rule in plan.rules]
        self._current: tuple[int, dict[str, torch.Tensor | FileRange]] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._prefetched: dict[int, Future] = {}

    def out_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return self.target if dtype.is_floating_point else dtype

    def outputs(self, plan: Plan) -> list[OutputTensor]:
        return [
            OutputTensor(name, self.out_dtype(dtype), tuple(shape))
            for rule in plan.rules
            for name, shape, dtype in zip(rule.outputs, rule.shapes, rule.dtypes, strict=True)
        ]

    def _file_ranges(self, rule: Rule) -> list[FileRange] | None:
        """The outputs' byte ranges in the source file, when every output is one."""
        if not rule.views or len(rule.inputs) != 1:
            return None
        info = self.source.tensors[rule.inputs[0]]
        if info.offset is None or self.out_dtype(info.dtype) != info.dtype:
            return None
        # The transform applied to a tensor without data gives each view's storage offset.
        views = rule.transform([torch.empty(info.shape, dtype=info.dtype, device="meta")])
        if not all(view.is_contiguous() for view in views):
            return None
        size = info.dtype.itemsize
        return [FileRange(info.file, info.offset + view.storage_offset() * size,
                          view.numel() * size) for view in views]

    def _transformed(self, index: int) -> list[torch.Tensor]:
        rule = self.rules[index]
        inputs = [self.source.load(name) for name in rule.inputs]
        return rule.transform(inputs, self.target) if rule.takes_dtype else rule.transform(inputs)

    def _input_bytes(self, index: int) -> int:
        return sum(self.source.tensors[name].nbytes for name in self.rules[index].inputs)

    def _prefetch_after(self, index: int) -> None:
        """Read ahead up to PREFETCH_BYTES (at least one rule) of the safetensors inputs of the
        rules after `index` that are read into memory."""
        ahead = sum(self._input_bytes(i) for i in self._prefetched)
        following = max([index, *self._prefetched]) + 1
        while following < len(self.rules) and (not self._prefetched or ahead < PREFETCH_BYTES):
            if self.ranges[following] is None:
                names = self.rules[following].inputs
                if any(self.source.tensors[n].offset is None for n in names):
                    break
                self._prefetched[following] = self._pool.submit(self._transformed, following)
                ahead += self._input_bytes(following)
            following += 1

    def produce(self, spec: OutputTensor) -> torch.Tensor | FileRange:
        index = self.index_of[spec.name]
        rule: Rule = self.rules[index]
        if self._current is None or self._current[0] != index:
            self._current = None  # free the previous rule's tensors first
            future = self._prefetched.pop(index, None)
            self._prefetch_after(index)
            if self.ranges[index] is not None:
                results: list = self.ranges[index]
            else:
                results = future.result() if future is not None else self._transformed(index)
            self._current = (index, dict(zip(rule.outputs, results, strict=True)))
        data = self._current[1].pop(spec.name)
        if isinstance(data, torch.Tensor) and data.dtype.is_floating_point \
                and data.dtype != spec.dtype:
            data = data.to(spec.dtype)
        return data

    def close(self) -> None:
        self._current = None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._prefetched.clear()


def check_destination(dst: Path, src: Path, force: bool) -> None:
    if dst.resolve() == src.resolve():
        raise ConversionError(f"DST {dst} is the source directory; choose another directory.")
    if dst.exists() and not dst.is_dir():
        raise ConversionError(f"DST {dst} exists and is not a directory.")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise ConversionError(
            f"DST {dst} exists and is not empty; pass --force to replace it (the old content "
            "is removed only after the new conversion has succeeded)."
        )


def _clean_stale_staging(parent: Path, name: str) -> None:
    for stale in parent.glob(f"{STAGING_PREFIX}{name}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_tokenizer(src: Path, out: Path, llama_config: dict, layout: str) -> dict:
    max_len = int(llama_config.get("max_position_embeddings", 4096))
    if (src / "tokenizer.model").exists() and (layout != "llama"
                                               or not (src / "tokenizer.json").exists()):
        return convert_tokenizer(src / "tokenizer.model", out,
                                 pad_token_id=int(llama_config.get("pad_token_id") or 0),
                                 model_max_length=max_len)
    if (src / "tokenizer.json").exists():
        for name in FAST_TOKENIZER_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, out / name)
        return {"source": "tokenizer.json", "copied": True}
    raise ConversionError(
        f"{src}: no tokenizer found (expected tokenizer.model from the published checkpoint, "
        "or a fast tokenizer.json)."
    )


def _write_metadata(out: Path, plan: Plan, target: torch.dtype) -> None:
    from huatuogpt2.checkpoint_metadata import add_chat_template, write_generation_config

    config = {**plan.llama_config, "torch_dtype": str(target).removeprefix("torch.")}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    eos = config.get("eos_token_id", 2)
    write_generation_config(out, eos_token_id=eos)
    add_chat_template(out)
    if plan.quantization is not None:
        (out / "quantize_config.json").write_text(json.dumps(plan.quantization, indent=2) + "\n")


def _write_side_files(src: Path, out: Path, plan: Plan, target: torch.dtype) -> dict:
    """Tokenizer and serving metadata; returns the tokenizer record for the manifest."""
    tokenizer = _write_tokenizer(src, out, plan.llama_config, plan.layout)
    _write_metadata(out, plan, target)
    return tokenizer


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc="converting", disable=not enabled, mininterval=1.0)


def convert(src: Path, dst: Path, options: Options = Options()) -> dict:
    """Convert the checkpoint in `src` into a Llama-layout checkpoint in `dst`; returns the
    manifest. Raises ConversionError (with file and tensor names) for bad inputs."""
    src, dst = Path(src), Path(dst)
    read_config(src)  # a clear error before anything else when the source is not a checkpoint
    check_destination(dst, src, options.force)
    started = time.monotonic()
    source = SourceCheckpoint(src)
    plan = plan_conversion(src, source)
    target = _target_dtype(options.dtype, source, plan)
    runner = RuleRunner(source, plan, target)
    outputs = runner.outputs(plan)
    shards = plan_shards(outputs, options.shard_bytes)
    logger.info("Converting %s (%s layout, %d tensors, %.2f GB) into %s as %s.", src,
                plan.layout, len(source.tensors), source.total_bytes / 1e9, dst,
                str(target).removeprefix("torch."))

    dst.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_staging(dst.parent, dst.name)
    staging = dst.parent / f"{STAGING_PREFIX}{dst.name}-{os.getpid()}"
    staging.mkdir()
    hasher = BackgroundHasher(source.files) if options.hash_sources else None
    # The tokenizer and the serving metadata are small files but seconds of imports
    # (protobuf, tokenizers, the chat template): made in a thread while the weights stream.
    side = ThreadPoolExecutor(1, thread_name_prefix="tokenizer")
    side_files = side.submit(_write_side_files, src, staging, plan, target)
    try:
        with _progress(sum(t.nbytes for t in outputs), options.progress) as bar:
            files = write_shards(staging, shards, runner.produce,
                                 on_tensor=lambda t: bar.update(t.nbytes))
        runner.close()
        source.close()
        tokenizer = side_files.result()
        side.shutdown()
        verification = None
        if options.verify:
            from adapters.checkpoint.verify import verify_conversion

            verification = verify_conversion(src, staging)
        hashes = hasher.result() if hasher else {}
        manifest = write_manifest(
            staging,
            source={"path": str(src.resolve()), "layout": plan.layout,
                    "architecture": (read_config(src).get("architectures") or ["?"])[0],
                    "dtype": str(source_dtype(source)).removeprefix("torch."),
                    "files": source_files_record(src, hashes) if hasher else []},
            output={"dtype": str(target).removeprefix("torch."), "files": files,
                    "tensors": len(outputs), "bytes": sum(t.nbytes for t in outputs)},
            transformations=plan.transformations
            + ([f"cast floating tensors to {str(target).removeprefix('torch.')}"]
               if any(i.dtype.is_floating_point and i.dtype != target
                      for i in source.tensors.values()) else [])
            + ["tokenizer: " + ("copied" if tokenizer.get("copied")
                                else "SentencePiece -> fast tokenizer.json (identical ids)"),
               "serving metadata: HuatuoGPT2 chat_template, generation_config.json"],
            dropped_tensors=plan.dropped,
            quantization=plan.quantization,
            tokenizer=tokenizer,
            verification=verification,
            seconds=round(time.monotonic() - started, 3),
        )
        _publish(staging, dst, options.force)
    except BaseException:
        runner.close()
        side.shutdown(wait=True, cancel_futures=True)  # nothing writes into staging any more
        if hasher is not None:
            hasher.cancel()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Wrote %s (%d shards) in %.1f s.", dst, len(files), time.monotonic() - started)
    return manifest


def _publish(staging: Path, dst: Path, force: bool) -> None:
    """Swap the finished staging directory into place; an old DST goes only after that."""
    if dst.is_dir() and not any(dst.iterdir()):
        dst.rmdir()
    if dst.exists() and not force:
        # Another process (a second replica converting into the same cache) got there first.
        raise ConversionError(f"DST {dst} was created by someone else during the conversion; "
                              "left it as it is.")
    if dst.exists():
        old = dst.parent / f"{STAGING_PREFIX}{dst.name}-old-{os.getpid()}"
        os.replace(dst, old)
        os.replace(staging, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, dst)
