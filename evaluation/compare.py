"""`huatuo eval compare RUN_A RUN_B`: two runs over the same questions, paired.

Accuracy per group for both runs, the difference (B - A, in points), and an exact McNemar
test on the paired answers (a two-sided binomial test on the discordant pairs: b = questions
A got right and B wrong, c = the reverse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evaluation.report import PREDICTIONS
from evaluation.stats import mcnemar_exact


class CompareError(ValueError):
    pass


def load_predictions(run: Path) -> dict[str, dict]:
    path = Path(run) / PREDICTIONS if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise CompareError(f"no {PREDICTIONS} in {run} (is it an output dir of 'huatuo eval "
                           "mcq'?)")
    rows = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise CompareError(f"{path}:{n}: not JSON") from None
            if row.get("answered"):
                rows[str(row["id"])] = row
    return rows


@dataclass
class Paired:
    n: int
    correct_a: int
    correct_b: int
    b: int  # A right, B wrong
    c: int  # A wrong, B right

    @property
    def acc_a(self) -> float:
        return self.correct_a / self.n if self.n else float("nan")

    @property
    def acc_b(self) -> float:
        return self.correct_b / self.n if self.n else float("nan")

    @property
    def diff_points(self) -> float:
        return 100 * (self.acc_b - self.acc_a)

    @property
    def p(self) -> float:
        return mcnemar_exact(self.b, self.c)


def pair(a: dict[str, dict], b: dict[str, dict], ids: list[str]) -> Paired:
    ca = [bool(a[i]["correct"]) for i in ids]
    cb = [bool(b[i]["correct"]) for i in ids]
    return Paired(len(ids), sum(ca), sum(cb),
                  sum(x and not y for x, y in zip(ca, cb, strict=True)),
                  sum(y and not x for x, y in zip(ca, cb, strict=True)))


def verdict(p: Paired, alpha: float = 0.05, name_b: str = "RUN_B") -> str:
    if p.n == 0:
        return "no questions in common"
    if p.p < alpha and p.diff_points != 0:
        word = "better" if p.diff_points > 0 else "worse"
        return f"{name_b} is {word}: {p.diff_points:+.1f} points, p={p.p:.3g}"
    return f"no significant difference ({p.diff_points:+.1f} points, p={p.p:.2g})"


def compare(run_a: Path, run_b: Path, alpha: float = 0.05) -> tuple[str, dict]:
    a, b = load_predictions(run_a), load_predictions(run_b)
    ids = sorted(set(a) & set(b))
    only = len(set(a) ^ set(b))
    overall = pair(a, b, ids)
    groups: dict[str, dict[str, list[str]]] = {}
    for i in ids:
        for field, value in (a[i].get("groups") or {}).items():
            groups.setdefault(field, {}).setdefault(str(value), []).append(i)
    lines = ["# Paired comparison", "", f"- RUN_A: `{run_a}`", f"- RUN_B: `{run_b}`",
             f"- questions in common: {len(ids)}" + (f" ({only} in one run only, ignored)"
                                                      if only else ""), "",
             "| group | n | A % | B % | B-A points | A only right | B only right | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]

    def row(label: str, p: Paired) -> str:
        return (f"| {label} | {p.n} | {100 * p.acc_a:.1f} | {100 * p.acc_b:.1f} | "
                f"{p.diff_points:+.1f} | {p.b} | {p.c} | {p.p:.3g} |")

    lines.append(row("overall", overall))
    data = {"n": overall.n, "acc_a": overall.acc_a, "acc_b": overall.acc_b,
            "diff_points": overall.diff_points, "b": overall.b, "c": overall.c,
            "p": overall.p, "groups": {}}
    for field, values in sorted(groups.items()):
        for value, members in sorted(values.items()):
            p = pair(a, b, members)
            lines.append(row(f"{field}={value}", p))
            data["groups"].setdefault(field, {})[value] = {
                "n": p.n, "acc_a": p.acc_a, "acc_b": p.acc_b, "diff_points": p.diff_points,
                "b": p.b, "c": p.c, "p": p.p}
    line = verdict(overall, alpha)
    data["verdict"] = line
    lines += ["", f"**Verdict:** {line}", ""]
    return "\n".join(lines), data
