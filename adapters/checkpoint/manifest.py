"""conversion.json: what was converted, from which exact files, and how."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

from adapters.checkpoint import CONVERTER_VERSION

MANIFEST_NAME = "conversion.json"


def sha256_file(path: Path, chunk: int = 16 << 20,
                stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)  # hashlib releases the GIL on large blocks
            if stop is not None and stop.is_set():
                break
    return digest.hexdigest()


class BackgroundHasher:
    """Hash the source files in a thread while the conversion reads them: both readers walk
    the files in the same order, so the disk is read once and the page cache serves the other."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.hashes: dict[str, str] = {}
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for path in self.files:
                if self._stop.is_set():
                    return
                self.hashes[path.name] = sha256_file(path, stop=self._stop)
        except BaseException as exc:  # re-raised in result()
            self._error = exc

    def cancel(self) -> None:
        """Stop reading (the conversion failed): no I/O left behind in the background."""
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.hashes


def source_files_record(directory: Path, hashes: dict[str, str]) -> list[dict]:
    records = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        record: dict[str, object] = {"name": path.name, "bytes": path.stat().st_size}
        record["sha256"] = hashes.get(path.name) or sha256_file(path)
        records.append(record)
    return records


def write_manifest(directory: Path, **fields: object) -> dict:
    manifest = {
        "converter": "huatuo convert",
        "converter_version": CONVERTER_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }
    (directory / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
