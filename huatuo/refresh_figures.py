"""`huatuo figures`: copy the recorded benchmark results into the docs' figure markers.

Benchmarks write `docs/results/<name>.json`; this command renders them into README.md, docs/
and k8s/README.md (see `figures/docs.py`). `--check` changes nothing and exits 1 when a document
is stale, which is what the docs test asserts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from figures import docs
from figures.record import RESULTS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding README.md and docs/ (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a document's figures are out of date")


def run(args: argparse.Namespace) -> int:
    paths = docs.documents(args.root)
    results = args.root / RESULTS_DIR
    try:
        if args.check:
            out_of_date = docs.stale(paths, results)
            for path in out_of_date:
                print(f"huatuo figures: {path} is out of date; run 'huatuo figures'",
                      file=sys.stderr)
            return 1 if out_of_date else 0
        for path in docs.refresh(paths, results):
            print(f"updated {path}")
    except docs.MissingResult as exc:
        print(f"huatuo figures: {exc}; run the benchmark that records it", file=sys.stderr)
        return 1
    return 0
