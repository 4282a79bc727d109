"""Streaming checkpoint I/O: read any published weight layout, write sharded safetensors.

Memory stays bounded by the largest single tensor rather than the model or a shard:
- safetensors inputs are read tensor by tensor with plain `readinto` at the offsets of the
  header (no mmap: touched mmap pages count as resident memory for the whole shard);
- PyTorch `.bin` inputs are opened with `torch.load(mmap=True)`, one file at a time;
- outputs are planned from shapes alone, so each safetensors header is written first and the
  tensor bytes follow one by one, straight from the producing tensor;
- an output that is an unchanged byte range of a safetensors input (a copied tensor, a row
  block of W_pack) never enters the process: `copy_file_range` copies it file to file inside
  the kernel, so it costs no memory, no page faults and no copy through user space.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from adapters.checkpoint.errors import ConversionError

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"

# safetensors dtype strings <-> torch dtypes
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    # Absolute byte offset of the data in a safetensors file; None for .bin files.
    offset: int | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read_safetensors_header(path: Path) -> list[TensorInfo]:
    """Tensor infos of one safetensors file, checking that every tensor lies inside the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path}: truncated safetensors file ({size} bytes, no header).")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise ConversionError(
                f"{path}: truncated safetensors file: the header announces {header_len} bytes "
                f"but the file has {size} bytes."
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{path}: corrupt safetensors header ({exc}).") from exc
    data_start = 8 + header_len
    infos = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype "
                                  f"{entry.get('dtype')!r}.")
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = entry["data_offsets"]
        info = TensorInfo(name, path, dtype, shape, data_start + begin)
        if end - begin != info.nbytes:
            raise ConversionError(
                f"{path}: tensor {name!r} has shape {list(shape)} ({info.nbytes} bytes) but "
                f"{end - begin} bytes of data."
            )
        if data_start + end > size:
            raise ConversionError(
                f"{path}: truncated file: tensor {name!r} needs bytes up to {data_start + end} "
                f"but the file has {size} bytes."
            )
        infos.append(info)
    infos.sort(key=lambda i: i.offset or 0)  # file order: reads stay sequential
    return infos


def _load_bin(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict of a PyTorch weight file, and whether it is memory-mapped."""
    mapped = True
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Pre-1.6 (non-zip) pickles cannot be mapped: this file is read whole.
            state = torch.load(path, map_location="cpu", weights_only=True)
            mapped = False
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise ConversionError(
            f"{path}: cannot read this PyTorch weight file ({type(exc).__name__}: {exc}); "
            "it is probably truncated or corrupt."
        ) from exc
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(state).__name__}.")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state, mapped


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, from its index when it has one."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index_path = directory / index_name
        if index_path.exists():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConversionError(f"{index_path}: not a valid index file ({exc}).") from exc
            files = list(dict.fromkeys(weight_map.values()))
            missing = [f for f in files if not (directory / f).is_file()]
            if missing:
                raise ConversionError(
                    f"{index_path} lists weight files that are missing from {directory}: "
                    + ", ".join(missing)
                )
            return [directory / f for f in files]
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(p for p in directory.glob(pattern) if _is_weight_file(p))
        if files:
            return files
    raise ConversionError(
        f"{directory}: no weights found (expected model.safetensors, pytorch_model.bin, or an "
        f"index file {SAFETENSORS_INDEX} / {BIN_INDEX} with its shards)."
    )


def _is_weight_file(path: Path) -> bool:
    # training_args.bin and friends are not weights
    return not re.search(r"(training_args|optimizer|scheduler|rng_state)", path.name)


class SourceCheckpoint:
    """Read access to every tensor of a checkpoint, one tensor at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = weight_files(directory)
        self.tensors: dict[str, TensorInfo] = {}
        for path in self.files:
            for info in self._scan(path):
                if info.name in self.tensors:
                    raise ConversionError(
                        f"tensor {info.name!r} appears twice: in {self.tensors[info.name].file} "
                        f"and {path}."
                    )
                self.tensors[info.name] = info
        self._check_index()
        self._open_bin: tuple[Path, dict[str, torch.Tensor]] | None = None

    def _scan(self, path: Path) -> list[TensorInfo]:
        if path.suffix == ".safetensors":
            return _read_safetensors_header(path)
        state, _ = _load_bin(path)
        infos = []
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                continue
            infos.append(TensorInfo(name, path, tensor.dtype, tuple(tensor.shape)))
        return infos

    def _check_index(self) -> None:
        for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
            index_path = self.directory / index_name
            if not index_path.exists():
                continue
            weight_map = json.loads(index_path.read_text())["weight_map"]
            for name, file in weight_map.items():
                info = self.tensors.get(name)
                if info is None or info.file.name != file:
                    raise ConversionError(
                        f"{index_path} says tensor {name!r} is in {file}, but that file does not "
                        "hold it (truncated or mismatched shard?)."
                    )
            return

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def load(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        if info.offset is not None:
            buffer = torch.empty(info.nbytes, dtype=torch.uint8)
            with info.file.open("rb") as f:
                f.seek(info.offset)
                got = f.readinto(buffer.numpy())
            if got != info.nbytes:
                raise ConversionError(f"{info.file}: truncated while reading tensor {name!r}.")
            return buffer.view(info.dtype).reshape(info.shape)
        if self._open_bin is not None and self._open_bin[0] == info.file:
            state = self._open_bin[1]
        else:
            self._open_bin = None  # drop the previous file first
            state, mapped = _load_bin(info.file)
            # A mapping is re-opened per tensor: every touched page of a live mapping counts as
            # resident memory, so one long-lived mapping would grow to the whole file. Only a
            # file that cannot be mapped is kept (it is in memory anyway).
            if not mapped:
                self._open_bin = (info.file, state)
        try:
            return state[name]
        except KeyError as exc:
            raise ConversionError(f"{info.file}: tensor {name!r} vanished while reading.") from exc

    def close(self) -> None:
        self._open_bin = None


@dataclass(frozen=True)
class FileRange:
    """Bytes of a source file that become an output tensor unchanged."""

    file: Path
    offset: int
    nbytes: int


# Errors of copy_file_range that mean "not between these two files": fall back to read/write.
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
_FALLBACK_CHUNK = 16 << 20
# Written bytes are handed to the disk in steps of this size (see OutputFile).
WRITEBACK_CHUNK = 64 << 20


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), which Python's os module does not offer."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


_START_WRITEBACK = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


class OutputFile:
    """A shard being written, tensor after tensor, at the end of the file.

    Each WRITEBACK_CHUNK is handed to the disk as soon as it is written
    (sync_file_range(SYNC_FILE_RANGE_WRITE) starts the write-back and does not wait): left to
    itself, the kernel holds written data in the page cache until the dirty limit (10% of
    memory) or the final fsync, so the disk would first only read, then only write."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.position = 0

    def _written(self, nbytes: int) -> None:
        if _START_WRITEBACK is not None:  # a hint: its failure changes no byte
            _START_WRITEBACK(self.fd, self.position, nbytes, _SYNC_FILE_RANGE_WRITE)
        self.position += nbytes

    def write(self, data: memoryview) -> None:
        """Unbuffered: one system call per chunk, straight from the tensor's memory."""
        for start in range(0, len(data), WRITEBACK_CHUNK):
            chunk = data[start:start + WRITEBACK_CHUNK]
            rest = chunk
            while rest:
                rest = rest[os.write(self.fd, rest):]
            self._written(len(chunk))

    def copy(self, source: FileRange, name: str) -> None:
        """Append `source`: a kernel copy (copy_file_range) when the filesystems allow it,
        else read and write through a buffer."""
        with source.file.open("rb", buffering=0) as f:
            fd = f.fileno()
            if hasattr(os, "posix_fadvise"):  # a larger read-ahead (not on macOS)
                os.posix_fadvise(fd, source.offset, source.nbytes, os.POSIX_FADV_SEQUENTIAL)
            done, kernel, buffer = 0, hasattr(os, "copy_file_range"), None
            while done < source.nbytes:
                want = min(source.nbytes - done, WRITEBACK_CHUNK)
                if kernel:
                    try:
                        got = os.copy_file_range(fd, self.fd, want, source.offset + done)
                    except OSError as exc:
                        if exc.errno not in _NO_COPY_FILE_RANGE:
                            raise
                        kernel = False
                        continue
                else:
                    buffer = buffer or bytearray(min(want, _FALLBACK_CHUNK))
                    got = os.preadv(fd, [memoryview(buffer)[:want]], source.offset + done)
                if got == 0:
                    raise ConversionError(
                        f"{source.file}: truncated while reading tensor {name!r}.")
                if kernel:
                    self._written(got)
                else:
                    self.write(memoryview(buffer)[:got])
                done += got

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 5GB, 500MB, 2GiB)")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    power = " KMGT".index(unit.upper() or " ")
    return int(float(number) * base**power)


def plan_shards(tensors: list[OutputTensor], max_shard_bytes: int) -> list[list[OutputTensor]]:
    """Group tensors in order into shards of at most `max_shard_bytes` (a bigger tensor alone)."""
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return [s for s in shards if s]


def _safetensors_header(shard: list[OutputTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in shard:
        header[tensor.name] = {
            "dtype": _ST_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw


def write_shards(
    directory: Path,
    shards: list[list[OutputTensor]],
    produce: Callable[[OutputTensor], torch.Tensor | FileRange],
    on_tensor: Callable[[OutputTensor], None] = lambda t: None,
) -> list[str]:
    """Write `model-0000i-of-0000n.safetensors` files and their index; returns the file names.

    `produce` gives each tensor's bytes: a tensor, or a byte range of a source file."""
    total = len(shards)
    names = [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
    weight_map: dict[str, str] = {}
    for file_name, shard in zip(names, shards, strict=True):
        out = OutputFile(directory / file_name)
        try:
            out.write(memoryview(_safetensors_header(shard)))
            for spec in shard:
                data = produce(spec)
                if isinstance(data, FileRange):
                    if data.nbytes != spec.nbytes:
                        raise ConversionError(f"internal: {spec.name} is {data.nbytes} bytes of "
                                              f"{data.file}, planned {spec.nbytes}")
                    out.copy(data, spec.name)
                else:
                    if data.dtype != spec.dtype or tuple(data.shape) != spec.shape:
                        raise ConversionError(
                            f"internal: {spec.name} produced {data.dtype} {list(data.shape)}, "
                            f"planned {spec.dtype} {list(spec.shape)}"
                        )
                    out.write(data.contiguous().reshape(-1).view(torch.uint8).numpy().data)
                    del data
                weight_map[spec.name] = file_name
                on_tensor(spec)
        finally:
            out.close()
    # Durable before the staging directory is renamed into place. One fsync per file at the
    # end, not after each shard: the write-back of every chunk started as it was written (see
    # OutputFile), so this waits only for the last ones.
    for file_name in names:
        fd = os.open(directory / file_name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    index = {
        "metadata": {"total_size": sum(t.nbytes for s in shards for t in s)},
        "weight_map": weight_map,
    }
    (directory / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return names

