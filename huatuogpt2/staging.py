"""Build a directory into a cache atomically: into a staging directory, then one rename.

Every cached artefact (the demo checkpoint, the trained demo model, a converted checkpoint) is
built this way, so a crash or a SIGKILL never leaves a half-written directory where a reader
would take it for a finished one, and replicas sharing a cache may race: the first rename wins
and the others use its result.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_atomically(target: Path, build: Callable[[Path], Path | None], *,
                     done_marker: str = "config.json") -> Path:
    """Return `target`, building it first with `build(staging_dir)` unless it already exists.

    `build` writes into the empty staging directory it is given; it may return a subdirectory
    of it to publish instead (e.g. an export inside a run directory). `done_marker` is the file
    whose presence means `target` is complete.
    """
    target = Path(target)
    if (target / done_marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        built = build(staging) or staging
        os.replace(built, target)
    except OSError:
        # Another process published the same target first: use theirs.
        if not (target / done_marker).exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
