"""Write one benchmark result: what ran, when, on which machine, and the Markdown it renders to.

A result is `docs/results/<name>.json`. The benchmark that measured the figures writes it (so a
figure is never typed by hand); `huatuo figures` then copies its Markdown into the docs between
`<!-- figures:<name> -->` markers (see `figures/docs.py`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("docs/results")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def machine() -> str:
    """One line naming the machine: CPU model and cores, memory, GPUs, load at the time."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    gpus = len([p for p in Path("/dev").glob("nvidia[0-9]*")]) if Path("/dev").exists() else 0
    gpu = f", {gpus} NVIDIA GPU(s)" if gpus else ", no GPU"
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return f"{os.cpu_count()} CPU cores ({cpu}){memory}{gpu}{load}"


def result_path(name: str, results_dir: Path = RESULTS_DIR) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"result name {name!r}: use lowercase letters, digits, '_', '.', '-'")
    return results_dir / f"{name}.json"


def write_result(
    name: str,
    markdown: str,
    *,
    inline: dict[str, str] | None = None,
    data: dict[str, Any] | None = None,
    command: str | None = None,
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Record a result. `markdown` is the block the docs show; `inline` holds short figures
    (e.g. {"seconds": "72 s"}) for `<!-- figure:<name>.<key> -->` markers inside a sentence;
    `data` is the raw measurement, kept for whoever wants to re-plot it."""
    path = result_path(name, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": command if command is not None else shlex.join(
            [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "markdown": markdown.strip("\n"),
        "inline": dict(inline or {}),
        "data": data or {},
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_result(name: str, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    return json.loads(result_path(name, results_dir).read_text(encoding="utf-8"))
