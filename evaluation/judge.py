"""`huatuo eval judge`: open-ended quality graded by an LLM judge over an OpenAI-compatible API.

- `pairwise`: upstream HuatuoGPT-II's protocol. The judge sees both answers twice, in both
  orders, and ends with one label ("Assistant 1 is better than / worse than / equal to
  Assistant 2"). Each order gives 10/0, 0/10 or 5/5; the summed scores decide win, tie or loss
  for answer A.
- `rubric`: HealthBench's format. Each row has `prompt` (chat messages) and `rubrics`
  ([{criterion, points, tags}], points may be negative). The model under test answers the
  conversation (or the row's answer is used), the judge answers JSON
  {"explanation": ..., "criteria_met": true/false} for each criterion; an example scores
  (points of met criteria) / (total positive points), clipped to [0, 1]; the overall score is
  the mean with a seeded bootstrap 95% interval.

A judge answer that cannot be parsed is asked again (at most --judge-retries times, 3 by
default) and then reported as a failure, never scored. Judge answers are cached in the output
directory, like `mcq` answers, so a rerun resumes.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from evaluation.cache import AnswerCache, cache_key
from evaluation.client import OpenAIClient, RequestFailed, RetryPolicy
from evaluation.stats import bootstrap_mean_ci


class JudgeDataError(ValueError):
    pass


PAIRWISE_PROMPT = """[Question]
{question}
[End of Question]

[Assistant 1]
{answer_1}
[End of Assistant 1]

[Assistant 2]
{answer_2}
[End of Assistant 2]

[System]
You are reviewing two AI assistants' answers to the medical question above. A good answer
addresses the user's actual problem; describes symptoms completely and accurately; reaches the
most reasonable diagnosis from all the information given; recommends effective, reliable
treatment suited to the severity and stage of the illness; and, when it prescribes, respects
indications, contraindications and dosages.
First compare the two answers against these requirements. Then, on the last line, write
exactly one of these labels and nothing else:
Assistant 1 is better than Assistant 2
Assistant 1 is worse than Assistant 2
Assistant 1 is equal to Assistant 2"""

RUBRIC_PROMPT = """You grade one answer of an AI assistant against one rubric criterion.

# Conversation
{conversation}

# The assistant's answer to grade
{response}

# Rubric criterion
[{points} points] {criterion}

# Instructions
Decide whether the answer meets the criterion. Some criteria describe something undesirable
(they carry negative points): still say whether the answer does what the criterion
describes. Answer with a JSON object only, in this form:
{{"explanation": "<one or two sentences>", "criteria_met": true}}
Use false for "criteria_met" when the criterion is not met."""

_LABEL_1 = re.compile(r"Assistant 1 is `?(better than|worse than|equal to)`? Assistant 2", re.I)
_LABEL_2 = re.compile(r"Assistant 2 is `?(better than|worse than|equal to)`? Assistant 1", re.I)


def parse_pairwise(text: str) -> tuple[int, int] | None:
    """(score of assistant 1, score of assistant 2), or None when no label is found."""
    for pattern, flip in ((_LABEL_1, False), (_LABEL_2, True)):
        labels = pattern.findall(text or "")
        if labels:
            label = labels[-1].lower()
            score = {"better than": (10, 0), "worse than": (0, 10), "equal to": (5, 5)}[label]
            return score[::-1] if flip else score
    return None


def parse_rubric(text: str) -> dict | None:
    """The judge's {"explanation", "criteria_met": bool} object, or None."""
    text = (text or "").strip()
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    for c in candidates:
        try:
            obj = json.loads(c)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("criteria_met"), bool):
            return {"explanation": str(obj.get("explanation", "")),
                    "criteria_met": obj["criteria_met"]}
    return None


def example_score(rubrics: list[dict], met: list[bool]) -> float | None:
    """HealthBench: points of met criteria over total positive points, clipped to [0, 1]."""
    positive = sum(r["points"] for r in rubrics if r["points"] > 0)
    if positive <= 0:
        return None
    achieved = sum(r["points"] for r, m in zip(rubrics, met, strict=True) if m)
    return min(1.0, max(0.0, achieved / positive))


def _read_rows(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise JudgeDataError(f"file not found: {path}")
    text = Path(path).read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        pass
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise JudgeDataError(f"{path}:{n}: not JSON or JSONL") from None
    return rows


def _answer_of(row: dict) -> str:
    for k in ("answer", "model_output", "output", "response", "completion"):
        if isinstance(row.get(k), str):
            return row[k]
    raise JudgeDataError(f"row {row.get('id')!r} has no answer field "
                         "(answer/model_output/output/response)")


def load_pairs(pairs: Path | None, file_a: Path | None, file_b: Path | None) -> list[dict]:
    if pairs is not None:
        rows = _read_rows(pairs)
        for r in rows:
            if not {"id", "question", "answer_a", "answer_b"} <= set(r):
                raise JudgeDataError(f"{pairs}: rows need id, question, answer_a, answer_b")
        return [{"id": str(r["id"]), "question": r["question"], "answer_a": r["answer_a"],
                 "answer_b": r["answer_b"]} for r in rows]
    if file_a is None or file_b is None:
        raise JudgeDataError("pairwise needs --pairs FILE, or both --a FILE and --b FILE")
    a = {str(r["id"]): r for r in _read_rows(file_a)}
    b = {str(r["id"]): r for r in _read_rows(file_b)}
    out = []
    for i in sorted(set(a) & set(b), key=lambda x: list(a).index(x)):
        question = a[i].get("question") or a[i].get("query")
        out.append({"id": i, "question": question, "answer_a": _answer_of(a[i]),
                    "answer_b": _answer_of(b[i])})
    if not out:
        raise JudgeDataError(f"{file_a} and {file_b} have no ids in common")
    return out


@dataclass
class JudgeConfig:
    judge_base_url: str
    judge_model: str | None
    output_dir: Path
    judge_api_key: str | None = None
    judge_retries: int = 3
    concurrency: int = 8
    max_retries: int = 6
    seed: int = 0
    limit: int | None = None
    judge_max_tokens: int = 1024
    timeout: float = 600.0
    progress: bool | None = None
    transport: object | None = None
    retry_base_delay: float = 0.5
    # rubric: the model under test, when the rows carry no answer
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.0


class Judge:
    def __init__(self, cfg: JudgeConfig, client: OpenAIClient, model: str,
                 cache: AnswerCache) -> None:
        self.cfg, self.client, self.model, self.cache = cfg, client, model, cache

    async def ask(self, prompt: str, parse, tag: str) -> tuple[object | None, str]:
        """The parsed judge answer (None after judge_retries unparsable ones), raw text."""
        raw = ""
        for attempt in range(self.cfg.judge_retries):
            key = cache_key(tag, prompt, self.model, {"judge": True, "attempt": attempt})
            record = self.cache.get(key)
            if record is None:
                body = {"model": self.model, "temperature": 0.0 if attempt == 0 else 0.7,
                        "max_tokens": self.cfg.judge_max_tokens, "seed": self.cfg.seed + attempt,
                        "messages": [{"role": "user", "content": prompt}]}
                response = await self.client.post("/chat/completions", body)
                text = (response.get("choices") or [{}])[0].get("message", {}).get("content")
                record = {"key": key, "id": tag, "output": text or ""}
                self.cache.put(record)
            raw = record["output"]
            parsed = parse(raw)
            if parsed is not None:
                return parsed, raw
        return None, raw


async def _model_of(client: OpenAIClient, name: str | None) -> str:
    return name or (await client.list_models())[0]


def _bar(total: int, show: bool | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not (sys.stderr.isatty() if show is None else show),
                file=sys.stderr, desc=desc)


def _client(cfg: JudgeConfig, base_url: str, key: str | None) -> OpenAIClient:
    return OpenAIClient(base_url, key, timeout=cfg.timeout,
                        retry=RetryPolicy(cfg.max_retries, cfg.retry_base_delay),
                        concurrency=cfg.concurrency, transport=cfg.transport)


async def run_pairwise(cfg: JudgeConfig, items: list[dict]) -> dict:
    items = items[: cfg.limit] if cfg.limit else items
    client = _client(cfg, cfg.judge_base_url, cfg.judge_api_key)
    cache = AnswerCache(cfg.output_dir)
    rows: list[dict] = []
    try:
        judge = Judge(cfg, client, await _model_of(client, cfg.judge_model), cache)
        bar = _bar(len(items), cfg.progress, "judge pairwise")

        async def one(item: dict) -> dict:
            row = {"id": item["id"]}
            try:
                ab, raw_ab = await judge.ask(PAIRWISE_PROMPT.format(
                    question=item["question"], answer_1=item["answer_a"],
                    answer_2=item["answer_b"]), parse_pairwise, f"{item['id']}/ab")
                ba, raw_ba = await judge.ask(PAIRWISE_PROMPT.format(
                    question=item["question"], answer_1=item["answer_b"],
                    answer_2=item["answer_a"]), parse_pairwise, f"{item['id']}/ba")
            except RequestFailed as exc:
                row.update(failed=True, error=str(exc))
                return row
            finally:
                bar.update(1)
            row.update(judge_ab=raw_ab, judge_ba=raw_ba)
            if ab is None or ba is None:
                row.update(failed=True, error="unparsable judge answer after "
                                              f"{cfg.judge_retries} tries")
                return row
            score_a, score_b = ab[0] + ba[1], ab[1] + ba[0]
            row.update(failed=False, score_a=score_a, score_b=score_b,
                       outcome="win" if score_a > score_b else
                       "loss" if score_b > score_a else "tie")
            return row

        rows = list(await asyncio.gather(*(one(i) for i in items)))
        bar.close()
    finally:
        cache.close()
        await client.aclose()
    scored = [r for r in rows if not r["failed"]]
    counts = {k: sum(r["outcome"] == k for r in scored) for k in ("win", "tie", "loss")}
    n = len(scored)
    results = {"mode": "pairwise", "judge_model": judge.model, "n": n,
               "failures": len(rows) - n, **counts,
               **{f"{k}_rate": (v / n if n else None) for k, v in counts.items()}}
    _write(cfg.output_dir, results, rows, _pairwise_md(results))
    return results


def _pairwise_md(r: dict) -> str:
    pct = {k: "-" if r[f"{k}_rate"] is None else f"{100 * r[f'{k}_rate']:.0f}"
           for k in ("win", "tie", "loss")}
    return ("# Pairwise judgement (answer A vs answer B)\n\n"
            f"- judge: `{r['judge_model']}`; both orders per question\n\n"
            "| n | win % | tie % | loss % | failures |\n|---|---|---|---|---|\n"
            f"| {r['n']} | {pct['win']} | {pct['tie']} | {pct['loss']} | {r['failures']} |\n")


def load_rubric_rows(path: Path) -> list[dict]:
    rows = _read_rows(path)
    for i, r in enumerate(rows):
        if not isinstance(r.get("prompt"), list) or not isinstance(r.get("rubrics"), list):
            raise JudgeDataError(f"{path}: row {i + 1} needs 'prompt' (messages) and "
                                 "'rubrics' [{criterion, points, tags}]")
        r.setdefault("prompt_id", str(r.get("id", i)))
    return rows


def _conversation(messages: list[dict]) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


async def run_rubric(cfg: JudgeConfig, rows: list[dict]) -> dict:
    rows = rows[: cfg.limit] if cfg.limit else rows
    judge_client = _client(cfg, cfg.judge_base_url, cfg.judge_api_key)
    cache = AnswerCache(cfg.output_dir)
    need_answers = any(not isinstance(r.get("completion", r.get("answer")), str) for r in rows)
    model_client = None
    if need_answers:
        if not cfg.base_url:
            raise JudgeDataError("some rows have no answer: give the model under test with "
                                 "--base-url (and --model)")
        model_client = _client(cfg, cfg.base_url, cfg.api_key)
    out: list[dict] = []
    try:
        judge = Judge(cfg, judge_client, await _model_of(judge_client, cfg.judge_model), cache)
        model = await _model_of(model_client, cfg.model) if model_client else None
        bar = _bar(len(rows), cfg.progress, "judge rubric")

        async def answer(row: dict) -> str:
            given = row.get("completion", row.get("answer"))
            if isinstance(given, str):
                return given
            key = cache_key(row["prompt_id"], row["prompt"], model,
                            {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature})
            record = cache.get(key)
            if record is None:
                response = await model_client.post("/chat/completions", {
                    "model": model, "messages": row["prompt"], "max_tokens": cfg.max_tokens,
                    "temperature": cfg.temperature, "seed": cfg.seed})
                record = {"key": key, "id": row["prompt_id"],
                          "output": response["choices"][0]["message"]["content"] or ""}
                cache.put(record)
            return record["output"]

        async def one(row: dict) -> dict:
            result = {"prompt_id": row["prompt_id"]}
            try:
                response = await answer(row)
                result["response"] = response
                conversation = _conversation(row["prompt"])
                graded = await asyncio.gather(*(judge.ask(RUBRIC_PROMPT.format(
                    conversation=conversation, response=response, points=r["points"],
                    criterion=r["criterion"]), parse_rubric, f"{row['prompt_id']}/{i}")
                    for i, r in enumerate(row["rubrics"])))
            except RequestFailed as exc:
                result.update(failed=True, error=str(exc))
                return result
            finally:
                bar.update(1)
            result["grades"] = [{"criterion": r["criterion"], "points": r["points"],
                                 "tags": r.get("tags", []),
                                 **(g if g else {"criteria_met": None, "unparsable": raw})}
                                for r, (g, raw) in zip(row["rubrics"], graded, strict=True)]
            if any(g is None for g, _ in graded):
                result.update(failed=True, error="unparsable judge answer after "
                                                 f"{cfg.judge_retries} tries")
                return result
            met = [g["criteria_met"] for g, _ in graded]
            result.update(failed=False, score=example_score(row["rubrics"], met))
            return result

        out = list(await asyncio.gather(*(one(r) for r in rows)))
        bar.close()
    finally:
        cache.close()
        await judge_client.aclose()
        if model_client:
            await model_client.aclose()
    scored = [r for r in out if not r["failed"] and r["score"] is not None]
    scores = [r["score"] for r in scored]
    by_tag: dict[str, list[float]] = defaultdict(list)
    for r, row in zip(out, rows, strict=True):
        if r.get("failed") or r.get("score") is None:
            continue
        for tag in sorted({t for rub in row["rubrics"] for t in rub.get("tags", [])}):
            by_tag[tag].append(r["score"])
    mean = sum(scores) / len(scores) if scores else None
    results = {"mode": "rubric", "judge_model": judge.model, "model": model, "n": len(scores),
               "failures": sum(1 for r in out if r["failed"]), "score": mean,
               "ci95": list(bootstrap_mean_ci(scores, seed=cfg.seed)) if scores else None,
               "by_tag": {t: {"n": len(v), "score": sum(v) / len(v)}
                          for t, v in sorted(by_tag.items())}}
    _write(cfg.output_dir, results, out, _rubric_md(results))
    return results


def _rubric_md(r: dict) -> str:
    score = "-" if r["score"] is None else f"{100 * r['score']:.1f}"
    ci = "-" if not r["ci95"] else f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}"
    lines = ["# Rubric judgement (HealthBench format)", "",
             f"- judge: `{r['judge_model']}`; model under test: `{r['model'] or 'given answers'}`",
             "", "| n | score % | 95% CI (bootstrap) | failures |", "|---|---|---|---|",
             f"| {r['n']} | {score} | {ci} | {r['failures']} |", ""]
    if r["by_tag"]:
        lines += ["| tag | n | score % |", "|---|---|---|"]
        lines += [f"| {t} | {v['n']} | {100 * v['score']:.1f} |" for t, v in r["by_tag"].items()]
    return "\n".join(lines) + "\n"


def _write(directory: Path, results: dict, rows: list[dict], md: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2)
                                            + "\n", encoding="utf-8")
    with (directory / "judgements.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (directory / "report.md").write_text(md, encoding="utf-8")
