"""The answer cache of a run: an append-only JSONL file in the output directory.

Every answered question is appended (and flushed) as soon as its answer arrives, keyed by a
hash of the question id, the prompt, the model and the sampling settings. A rerun, after
Ctrl-C, a crash or a finished run, sends only what the cache does not hold. A line cut short
by a kill is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_NAME = "cache.jsonl"


def cache_key(question_id: str, prompt: object, model: str, sampling: dict) -> str:
    payload = json.dumps({"id": question_id, "prompt": prompt, "model": model,
                          "sampling": sampling}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class AnswerCache:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / CACHE_NAME
        self.records: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a kill
                    if isinstance(record, dict) and "key" in record:
                        self.records[record["key"]] = record
        self._file = None

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A kill may have left a partial last line: start ours on a fresh line.
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and \
                not self.path.read_bytes().endswith(b"\n")
            self._file = self.path.open("a", encoding="utf-8")
            if needs_newline:
                self._file.write("\n")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[record["key"]] = record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
