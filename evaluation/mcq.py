"""`huatuo eval mcq`: multiple-choice accuracy of a model behind an OpenAI-compatible API.

Two modes:
- `generate`: a chat completion per question, then answer extraction (evaluation.extract).
- `loglik`: one /v1/completions request per question with every option as a prompt
  (`echo: true`, `logprobs: 1`, `max_tokens: 0`, or 1 when the server refuses 0); each
  option's score is the summed log-probability of its letter after the HuatuoGPT2 chat prompt
  and an answer lead-in; the answer is the argmax. Multiple-answer questions are SKIPPED in
  this mode (counted in `overall.skipped`): scoring letters one at a time cannot pick a set,
  and scoring every subset of five options (31 candidates) is not what the published numbers
  did.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import data as data_mod
from evaluation import extract, prompts, report
from evaluation.cache import AnswerCache, cache_key
from evaluation.client import (
    AuthRefused,
    OpenAIClient,
    RequestFailed,
    RetryPolicy,
    Unreachable,
    UsageError,
)


@dataclass
class McqConfig:
    base_url: str
    data: Path
    output_dir: Path
    api_key: str | None = None
    model: str | None = None
    fmt: str | None = None
    profile: str = "huatuo"
    mode: str = "generate"
    dev: Path | None = None
    shots: int = 5
    concurrency: int = 8
    limit: int | None = None
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    max_retries: int = 6
    timeout: float = 600.0
    progress: bool | None = None  # None: only when stderr is a terminal
    # tests: an httpx transport instead of the network
    transport: object | None = None
    retry_base_delay: float = 0.5


@dataclass
class Job:
    question: data_mod.Question
    prompt: object  # chat messages (generate) or the loglik prompt text
    key: str
    skipped: bool = False


@dataclass
class RunOutcome:
    results: dict
    predictions: list[dict]
    unanswered: int
    requests_sent: int
    errors: dict[str, str] = field(default_factory=dict)


def sampling(cfg: McqConfig) -> dict:
    if cfg.mode == "loglik":
        return {"mode": "loglik", "profile": cfg.profile}
    return {"mode": "generate", "profile": cfg.profile, "temperature": cfg.temperature,
            "top_p": cfg.top_p, "max_tokens": cfg.max_tokens, "seed": cfg.seed}


def load_questions(cfg: McqConfig) -> tuple[list[data_mod.Question], prompts.FewShot]:
    questions = data_mod.load(cfg.data, cfg.fmt)
    if cfg.limit is not None:
        questions = questions[: cfg.limit]
    fewshot = prompts.FewShot()
    if cfg.dev is not None:
        fewshot = prompts.FewShot(tuple(data_mod.load(cfg.dev)))
    return questions, fewshot


def build_jobs(questions: list[data_mod.Question], fewshot: prompts.FewShot, cfg: McqConfig,
               model: str) -> list[Job]:
    shots = cfg.shots if cfg.dev is not None else 0
    s = sampling(cfg)
    jobs = []
    for q in questions:
        if cfg.mode == "loglik":
            prompt: object = prompts.loglik_prompt(q, cfg.profile, fewshot, shots)
        else:
            prompt = prompts.chat_messages(q, cfg.profile, fewshot, shots)
        jobs.append(Job(q, prompt, cache_key(q.id, prompt, model, s),
                        skipped=cfg.mode == "loglik" and q.multi))
    return jobs


# --- log-likelihood alignment ----------------------------------------------------------

def continuation_logprob(logprobs: dict, text: str, continuation_chars: int,
                         generated: int = 0) -> tuple[float, bool]:
    """Sum of the logprobs of the tokens covering the last `continuation_chars` of `text`.

    `logprobs` is an echoed completion's (`tokens`, `token_logprobs`, `text_offset`), possibly
    followed by `generated` sampled tokens (the max_tokens=1 fallback), which are ignored.
    Tokens are located by `text_offset` when the echoed tokens spell `text` exactly (each
    token spans up to the next token's offset); otherwise (a server whose byte-level tokens
    decode to replacement characters) they are counted back from the end of the echo.
    Returns (score, merged): merged is True when a token straddles the prompt/continuation
    boundary; it is then counted with the continuation, since it holds the letter.
    """
    tokens = list(logprobs.get("tokens") or [])
    values = list(logprobs.get("token_logprobs") or [])
    if not tokens or len(values) != len(tokens):
        raise RequestFailed("the completion has no echoed tokens with logprobs (does the "
                            "server support echo with logprobs?)")
    prompt_chars = len(text) - continuation_chars
    offsets = logprobs.get("text_offset")
    picked: list[int] = []
    merged = False
    if offsets is not None and len(offsets) == len(tokens) and \
            "".join(tokens).startswith(text) and (not offsets or offsets[0] == 0):
        for i, start in enumerate(offsets):
            if start >= len(text):
                break
            end = offsets[i + 1] if i + 1 < len(offsets) else start + len(tokens[i])
            if end <= prompt_chars and start < prompt_chars:
                continue
            merged = merged or start < prompt_chars
            picked.append(i)
    else:
        echo = len(tokens) - generated
        covered = 0
        i = echo - 1
        while i >= 0 and covered < continuation_chars:
            covered += len(tokens[i])
            picked.append(i)
            i -= 1
        merged = covered > continuation_chars
    if not picked:
        raise RequestFailed("no continuation token found in the echoed logprobs")
    if any(values[i] is None for i in picked):
        raise RequestFailed("the server returned no log-probability for a continuation token "
                            "(does it support echo with logprobs?)")
    return sum(values[i] for i in picked), merged


class Runner:
    def __init__(self, cfg: McqConfig, client: OpenAIClient, model: str) -> None:
        self.cfg = cfg
        self.client = client
        self.model = model
        self.loglik_max_tokens = 0

    async def generate(self, job: Job) -> dict:
        body = {"model": self.model, "messages": job.prompt, "temperature": self.cfg.temperature,
                "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_tokens, "seed": self.cfg.seed}
        response = await self.client.post("/chat/completions", body)
        try:
            choice = response["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RequestFailed("the chat completion has no choices[0].message.content") \
                from None
        return {"output": text, "finish_reason": choice.get("finish_reason")}

    async def loglik(self, job: Job) -> dict:
        q = job.question
        letters = list(q.options)
        texts = [job.prompt + prompts.loglik_continuation(k, self.cfg.profile) for k in letters]
        while True:
            body = {"model": self.model, "prompt": texts, "echo": True, "logprobs": 1,
                    "max_tokens": self.loglik_max_tokens, "temperature": 0.0}
            try:
                response = await self.client.post("/completions", body)
                break
            except RequestFailed as exc:
                if body["max_tokens"] == 0 and exc.status in (400, 422):
                    self.loglik_max_tokens = 1  # the server refuses max_tokens=0
                    continue
                raise
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(texts):
            raise RequestFailed(f"expected {len(texts)} choices, got {len(choices)}")
        scores, merged = {}, False
        for k, text, choice in zip(letters, texts, choices, strict=True):
            lp = choice.get("logprobs")
            if not lp:
                raise RequestFailed("the completion has no logprobs (does the server support "
                                    "echo with logprobs?)")
            scores[k], m = continuation_logprob(lp, text, len(text) - len(job.prompt),
                                                generated=body["max_tokens"])
            merged = merged or m
        return {"scores": scores, "boundary_merged": merged}

    async def answer(self, job: Job) -> dict:
        result = await (self.loglik(job) if self.cfg.mode == "loglik" else self.generate(job))
        return {"key": job.key, "id": job.question.id, "model": self.model, **result}


def score_job(job: Job, record: dict | None, mode: str, error: str | None = None) -> dict:
    q = job.question
    row = {"id": q.id, "prompt": job.prompt, "gold": q.answer, "multi": q.multi,
           "groups": q.groups, "answered": False}
    if job.skipped:
        row.update(skipped=True, correct=None,
                   reason="multiple-answer question: not scored in loglik mode")
        return row
    if record is None:
        row.update(correct=None, error=error or "not answered")
        return row
    row["answered"] = True
    if mode == "loglik":
        scores = record["scores"]
        best = max(scores, key=lambda k: scores[k])
        row.update(output=scores, extracted=best, method="loglik", prediction=best,
                   correct=best == q.answer, extraction_failed=False,
                   boundary_merged=record.get("boundary_merged", False))
        return row
    text = record["output"]
    ex = extract.extract(text, q.options)
    pred = extract.prediction(ex.letters, q.multi)
    up_pred, up_correct = extract.score_upstream(text, q.options, q.answer)
    row.update(output=text, extracted=ex.letters or None, method=ex.method,
               prediction=pred or None, correct=extract.is_correct(pred, q.answer, q.multi),
               extraction_failed=not ex.letters, upstream_prediction=up_pred,
               upstream_correct=up_correct, finish_reason=record.get("finish_reason"))
    return row


async def _resolve_model(cfg: McqConfig, client: OpenAIClient) -> str:
    try:
        models = await client.list_models()
    except (AuthRefused, Unreachable):
        raise
    except UsageError:
        if cfg.model:
            return cfg.model  # a server without /v1/models: the named model is enough
        raise
    if cfg.model:
        return cfg.model
    if not models:
        raise UsageError(f"the server at {cfg.base_url} lists no models; name one with --model")
    return models[0]


async def run_async(cfg: McqConfig) -> RunOutcome:
    questions, fewshot = load_questions(cfg)
    client = OpenAIClient(cfg.base_url, cfg.api_key, timeout=cfg.timeout,
                          retry=RetryPolicy(cfg.max_retries, cfg.retry_base_delay),
                          concurrency=cfg.concurrency, transport=cfg.transport)
    cache = AnswerCache(cfg.output_dir)
    errors: dict[str, str] = {}
    try:
        model = await _resolve_model(cfg, client)
        jobs = build_jobs(questions, fewshot, cfg, model)
        todo = [j for j in jobs if not j.skipped and cache.get(j.key) is None]
        runner = Runner(cfg, client, model)
        show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
        from tqdm import tqdm

        bar = tqdm(total=len(todo), disable=not show, file=sys.stderr, unit="q",
                   desc=f"eval {cfg.mode}")

        async def one(job: Job) -> None:
            try:
                cache.put(await runner.answer(job))
            except RequestFailed as exc:
                errors[job.question.id] = str(exc)
            finally:
                bar.update(1)

        tasks = [asyncio.ensure_future(one(j)) for j in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        finally:
            bar.close()
    finally:
        cache.close()
        await client.aclose()
    predictions = [score_job(j, cache.get(j.key), cfg.mode, errors.get(j.question.id))
                   for j in jobs]
    results = report.summarize(predictions, cfg.mode)
    results["meta"] = {
        "model": model, "base_url": cfg.base_url, "data": str(cfg.data),
        "format": cfg.fmt or data_mod.detect_format(Path(cfg.data)), "profile": cfg.profile,
        "mode": cfg.mode, "sampling": sampling(cfg), "questions": len(jobs),
        "dev": str(cfg.dev) if cfg.dev else None, "shots": cfg.shots if cfg.dev else 0,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report.write(cfg.output_dir, results, predictions)
    unanswered = results["overall"]["unanswered"]
    return RunOutcome(results, predictions, unanswered, client.requests_sent, errors)


def summary_line(results: dict) -> str:
    o = results["overall"]
    acc = "n/a" if o["accuracy"] is None else f"{100 * o['accuracy']:.1f}%"
    lo, hi = o["ci95"]
    line = (f"accuracy {acc} ({o['correct']}/{o['n']}, 95% CI {100 * lo:.1f}-{100 * hi:.1f}), "
            f"extraction failures {o['extraction_failures']}")
    if o.get("accuracy_upstream") is not None:
        line += f", upstream scorer {100 * o['accuracy_upstream']:.1f}%"
    if o.get("skipped"):
        line += f", skipped {o['skipped']} multi-answer"
    if o.get("unanswered"):
        line += f", UNANSWERED {o['unanswered']}"
    return line if not math.isnan(lo) else line
