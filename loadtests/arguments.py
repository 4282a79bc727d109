"""Argument types shared by the `huatuo bench` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive_list(kind: Callable[[str], float]) -> Callable[[str], list]:
    """An argparse type for comma-separated positive numbers of `kind` (int or float)."""
    noun = "integers" if kind is int else "numbers"

    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {noun}, got {text!r}") from exc
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive {noun}, got {text!r}")
        return values

    return parse
