"""Results of a multiple-choice run: results.json, predictions.jsonl, report.md, a PNG."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path

from evaluation.stats import wilson

RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
REPORT = "report.md"
PLOT = "accuracy_by_group.png"


def _cell(n: int, correct: int) -> dict:
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None,
            "ci95": list(wilson(correct, n))}


def summarize(predictions: list[dict], mode: str) -> dict:
    """`overall` and `groups` from scored prediction rows (answered questions only)."""
    rows = [p for p in predictions if p.get("answered")]
    n = len(rows)
    correct = sum(bool(p["correct"]) for p in rows)
    overall = _cell(n, correct)
    overall["extraction_failures"] = sum(bool(p.get("extraction_failed")) for p in rows)
    if mode == "generate":
        up = sum(bool(p.get("upstream_correct")) for p in rows)
        overall["accuracy_upstream"] = up / n if n else None
    else:
        overall["accuracy_upstream"] = None
    overall["unanswered"] = sum(1 for p in predictions if not p.get("answered")
                                and not p.get("skipped"))
    overall["skipped"] = sum(1 for p in predictions if p.get("skipped"))
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for p in rows:
        for field, value in (p.get("groups") or {}).items():
            cell = counts[field][str(value)]
            cell[0] += 1
            cell[1] += bool(p["correct"])
    groups = {field: {value: _cell(c[0], c[1]) for value, c in sorted(values.items())}
              for field, values in sorted(counts.items())}
    return {"overall": overall, "groups": groups}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(results: dict) -> str:
    o = results["overall"]
    meta = results.get("meta", {})
    lines = ["# Multiple-choice evaluation", ""]
    for k in ("model", "base_url", "data", "format", "profile", "mode", "sampling"):
        if k in meta:
            value = json.dumps(meta[k], ensure_ascii=False) if isinstance(meta[k], dict) \
                else meta[k]
            lines.append(f"- {k}: `{value}`")
    lines += ["", "| | n | correct | accuracy % | 95% CI | extraction failures |"
              " upstream accuracy % |", "|---|---|---|---|---|---|---|",
              f"| overall | {o['n']} | {o['correct']} | {_pct(o['accuracy'])} | "
              f"{_pct(o['ci95'][0])}-{_pct(o['ci95'][1])} | {o['extraction_failures']} | "
              f"{_pct(o.get('accuracy_upstream'))} |", ""]
    if o.get("unanswered"):
        lines += [f"**{o['unanswered']} question(s) could not be answered** (after retries); "
                  "they are not counted. Rerun the same command to retry only those.", ""]
    if o.get("skipped"):
        lines += [f"{o['skipped']} multiple-answer question(s) skipped: log-likelihood mode "
                  "scores single letters only.", ""]
    lines.append("Accuracy counts an answer that cannot be extracted as wrong; upstream "
                 "accuracy scores the same outputs with HuatuoGPT-II's scorer (which "
                 "predicts \"B\" when it finds nothing).")
    for field, values in results["groups"].items():
        lines += ["", f"## By {field}", "", "| value | n | correct | accuracy % | 95% CI |",
                  "|---|---|---|---|---|"]
        for value, c in values.items():
            lines.append(f"| {value} | {c['n']} | {c['correct']} | {_pct(c['accuracy'])} | "
                         f"{_pct(c['ci95'][0])}-{_pct(c['ci95'][1])} |")
    return "\n".join(lines) + "\n"


CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC",
             "AR PL UMing CN", "Droid Sans Fallback")


def _cjk_font() -> str | None:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = next((name for name in CJK_FONTS if name in installed), None)
    if found:
        return found
    # matplotlib's font cache may predate the font's installation: look at the files
    markers = ("wqy", "notosanscjk", "notoserifcjk", "sourcehansans", "droidsansfallback",
               "simhei", "msyh", "pingfang", "uming")
    for path in font_manager.findSystemFonts():
        flat = path.lower().replace("-", "").replace("_", "")
        if any(m in flat for m in markers):
            try:
                font_manager.fontManager.addfont(path)
                return font_manager.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


def plot(results: dict, path: Path, max_bars: int = 40) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, acc, lo, hi = [], [], [], []
    o = results["overall"]
    entries = [("overall", o)] + [(f"{field}={value}", c)
                                  for field, values in results["groups"].items()
                                  for value, c in values.items()]
    for label, c in entries[:max_bars]:
        if not c["n"]:
            continue
        labels.append(label)
        acc.append(100 * c["accuracy"])
        lo.append(max(0.0, 100 * (c["accuracy"] - c["ci95"][0])))
        hi.append(max(0.0, 100 * (c["ci95"][1] - c["accuracy"])))
    font = _cjk_font()
    note = ""
    if font:
        plt.rcParams["font.sans-serif"] = [font, *plt.rcParams["font.sans-serif"]]
    elif any(not label.isascii() for label in labels):
        note = "\n(no CJK font installed: Chinese labels need e.g. fonts-noto-cjk; see report.md)"
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    y = list(range(len(labels)))
    ax.barh(y, acc, xerr=[lo, hi], color="#4c72b0", ecolor="black", capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy % (95% Wilson interval)")
    ax.set_title(f"{results.get('meta', {}).get('model', '')} - accuracy by group{note}",
                 fontsize=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing CJK glyphs in the default font
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)


def write(directory: Path, results: dict, predictions: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULTS).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n",
                                     encoding="utf-8")
    with (directory / PREDICTIONS).open("w", encoding="utf-8") as f:
        for p in predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    (directory / REPORT).write_text(markdown(results), encoding="utf-8")
    plot(results, directory / PLOT)
