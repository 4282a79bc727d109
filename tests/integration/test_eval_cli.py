"""`huatuo eval` end to end against an in-process fake OpenAI server (uvicorn in a thread).

The fake counts every request, answers "答案是X" from a table of replies, can answer 429 with
Retry-After, 500, 401, refuse max_tokens=0, or hang (so that a run can be killed midway).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from evaluation.cli import main as eval_main
from tests.support.server_process import free_port
from tests.support.threaded_server import serving_in_thread

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "evaluation" / "data"
CMB = SAMPLES / "sample_cmb.jsonl"
N_CMB = 14


class Fake:
    """State and behaviour of the fake server; the test thread changes it between runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.chat: list[str] = []  # the last user message of every chat request
        self.completions: list[dict] = []
        self.models_calls = 0
        self.no_models = False  # /v1/models answers 404
        self.rate_limit = 0  # answer 429 (Retry-After: 1) to this many next chat requests
        self.fail_500 = False
        self.auth_key: str | None = None
        self.refuse_zero = False
        self.hang_after: int | None = None  # answer this many chat requests, then hang
        self.answered = 0
        self.release = threading.Event()
        self.reply = lambda question: "答案是A。"

    def app(self) -> FastAPI:
        app = FastAPI()

        def refused(request: Request):
            if self.auth_key and request.headers.get("authorization") != \
                    f"Bearer {self.auth_key}":
                return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
            return None

        @app.get("/v1/models")
        async def models(request: Request):
            self.models_calls += 1
            if self.no_models:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            return refused(request) or {"object": "list",
                                        "data": [{"id": "fake-model", "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            if (r := refused(request)) is not None:
                return r
            body = await request.json()
            question = body["messages"][-1]["content"]
            with self.lock:
                self.chat.append(question)
                if self.rate_limit > 0:
                    self.rate_limit -= 1
                    return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                                        headers={"Retry-After": "1"})
                if self.fail_500:
                    return JSONResponse({"error": {"message": "boom"}}, status_code=500)
                hang = self.hang_after is not None and self.answered >= self.hang_after
                if not hang:
                    self.answered += 1
            while hang and not self.release.is_set():
                await asyncio.sleep(0.05)
            return {"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant",
                                             "content": self.reply(question)}}]}

        @app.post("/v1/completions")
        async def completions(request: Request):
            body = await request.json()
            with self.lock:
                self.completions.append(body)
            if self.refuse_zero and body.get("max_tokens") == 0:
                return JSONResponse({"error": {"message": "max_tokens must be >= 1"}},
                                    status_code=400)
            choices = []
            for i, text in enumerate(body["prompt"]):
                # one token per character; the last echoed character is the option letter
                extra = "。" if body.get("max_tokens") else ""
                tokens = list(text + extra)
                lps = [None] + [-1.0] * (len(tokens) - 1)
                letter_at = len(text) - 1
                lps[letter_at] = -0.1 if text[-1] == "B" else -2.0
                if extra:
                    lps[-1] = -0.5
                choices.append({"index": i, "text": text + extra, "finish_reason": "length",
                                "logprobs": {"tokens": tokens, "token_logprobs": lps,
                                             "top_logprobs": [None] * len(tokens),
                                             "text_offset": list(range(len(tokens)))}})
            return {"id": "c", "object": "text_completion", "model": body["model"],
                    "choices": choices}

        return app


@pytest.fixture(scope="module")
def fake_server():
    fake = Fake()
    with serving_in_thread(fake.app()) as base_url:
        yield fake, base_url
        fake.release.set()


@pytest.fixture
def fake(fake_server):
    fake, url = fake_server
    fake.reset()
    return fake, url


def mcq_args(url: str, out: Path, *extra: str, data: Path = CMB) -> list[str]:
    return ["mcq", "--base-url", url, "--data", str(data), "--output-dir", str(out),
            "--max-retries", "2", *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_full_run_writes_outputs_and_a_rerun_sends_nothing(fake, tmp_path, capsys):
    fake, url = fake
    gold = {json.loads(line)["question"]: json.loads(line)["answer"]
            for line in CMB.read_text().splitlines()}
    # right on every question but two; one reply that cannot be read
    wrong = list(gold)[:2]

    def reply(user_text: str) -> str:
        question = next(q for q in gold if q in user_text)
        if question == wrong[0]:
            return "I cannot answer this."
        if question == wrong[1]:
            return "答案是E。"
        return f"分析……答案是{gold[question]}。"

    fake.reply = reply
    out = tmp_path / "run"
    assert eval_main(mcq_args(url, out, "--concurrency", "4")) == 0
    assert len(fake.chat) == N_CMB
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert overall["n"] == N_CMB and overall["correct"] == N_CMB - 2
    assert overall["extraction_failures"] == 1
    assert overall["accuracy"] == pytest.approx((N_CMB - 2) / N_CMB)
    lo, hi = overall["ci95"]
    assert lo < overall["accuracy"] < hi
    # upstream's scorer guesses "B" for the unreadable reply; the gold there is A -> wrong
    assert overall["accuracy_upstream"] == pytest.approx((N_CMB - 2) / N_CMB)
    assert set(results["groups"]) == {"exam_type", "exam_class", "exam_subject",
                                      "question_type"}
    assert results["groups"]["exam_type"]["药师考试"]["n"] == 3
    assert results["meta"]["model"] == "fake-model" and results["meta"]["format"] == "cmb"
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == N_CMB
    assert {"id", "prompt", "output", "extracted", "gold", "correct"} <= set(rows[0])
    assert rows[0]["prompt"][-1]["content"].startswith("请回答下面选择题。\n[单项选择题]")
    assert "accuracy" in (out / "report.md").read_text()
    assert (out / "accuracy_by_group.png").read_bytes()[:4] == b"\x89PNG"
    assert len(read_jsonl(out / "cache.jsonl")) == N_CMB
    assert "accuracy 85.7%" in capsys.readouterr().out

    # a finished run, rerun: nothing is sent again, the results are the same
    fake.chat.clear()
    assert eval_main(mcq_args(url, out, "--concurrency", "4")) == 0
    assert fake.chat == []
    assert json.loads((out / "results.json").read_text())["overall"] == overall
    # another model name or other sampling is another cache key: asked again
    assert eval_main(mcq_args(url, out, "--limit", "2", "--max-tokens", "100")) == 0
    assert len(fake.chat) == 2


def test_429_is_retried_after_retry_after(fake, tmp_path):
    fake, url = fake
    fake.rate_limit = 2
    started = time.monotonic()
    assert eval_main(mcq_args(url, tmp_path / "r", "--limit", "1", "--concurrency", "1")) == 0
    elapsed = time.monotonic() - started
    assert len(fake.chat) == 3  # two 429s, then the answer
    assert elapsed >= 2.0  # Retry-After: 1, twice (the backoff alone would be ~0.75 s)


def test_run_killed_midway_resumes_without_resending(fake, tmp_path):
    fake, url = fake
    fake.hang_after = 5
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "huatuo", "eval",
           *mcq_args(url, out, "--concurrency", "1")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        cache = out / "cache.jsonl"
        while not (cache.exists() and len(read_jsonl(cache)) == 5 and len(fake.chat) == 6):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not reach 5 answers"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    first_answered = fake.chat[:5]
    fake.hang_after = None
    fake.release.set()
    fake.chat.clear()
    assert eval_main(mcq_args(url, out, "--concurrency", "2")) == 0
    assert len(fake.chat) == N_CMB - 5
    assert not set(fake.chat) & set(first_answered)
    assert json.loads((out / "results.json").read_text())["overall"]["n"] == N_CMB
    assert len(read_jsonl(out / "cache.jsonl")) == N_CMB


def test_ctrl_c_exits_130_with_one_line_and_keeps_the_cache(fake, tmp_path):
    fake, url = fake
    fake.hang_after = 2
    out = tmp_path / "interrupted"
    # -X faulthandler: if the process does not end, SIGABRT makes it print every thread's
    # stack. Such a hang was seen in CI (evaluation/interrupt.py now prevents both causes).
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "huatuo", "eval",
                             *mcq_args(url, out, "--concurrency", "1")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(fake.chat) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"huatuo eval did not end within 60 s of Ctrl+C; its stacks:\n{err}")
    fake.release.set()
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        "huatuo eval: error: interrupted; every answer received so far is cached in the output "
        "dir: rerun the same command to resume"]
    assert len(read_jsonl(out / "cache.jsonl")) == 2


def test_unanswerable_questions_exit_1_and_are_retried_on_rerun(fake, tmp_path, capsys):
    fake, url = fake
    fake.fail_500 = True
    out = tmp_path / "r"
    assert eval_main(mcq_args(url, out, "--limit", "3", "--max-retries", "1")) == 1
    assert len(fake.chat) == 6  # each question: one try and one retry
    err = capsys.readouterr().err
    assert "3 question(s) could not be answered" in err and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["unanswered"] == 3 and results["overall"]["n"] == 0
    fake.fail_500 = False
    fake.chat.clear()
    assert eval_main(mcq_args(url, out, "--limit", "3")) == 0
    assert len(fake.chat) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "huatuo", "eval", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_usage_errors_are_one_line_with_exit_2(fake, tmp_path):
    fake, url = fake
    missing = run_cli(*mcq_args(url, tmp_path / "o", data=tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"huatuo eval: error: data file not found: {tmp_path / 'nope.json'}"]
    weird = tmp_path / "weird.json"
    weird.write_text('[{"foo": 1}]')
    unknown = run_cli(*mcq_args(url, tmp_path / "o", data=weird))
    assert unknown.returncode == 2 and "unknown data format" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    fake.auth_key = "secret"
    no_key = run_cli(*mcq_args(url, tmp_path / "o"))
    assert no_key.returncode == 2 and "--api-key" in no_key.stderr
    assert "OPENAI_API_KEY" in no_key.stderr and "Traceback" not in no_key.stderr
    with_key = run_cli(*mcq_args(url, tmp_path / "o", "--limit", "1", "--api-key", "secret"))
    assert with_key.returncode == 0, with_key.stderr
    bad_arg = run_cli("mcq", "--data", str(CMB))
    assert bad_arg.returncode == 2 and "--output-dir" in bad_arg.stderr


def test_unreachable_server(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(*mcq_args(url, tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"huatuo eval: error: the server at {url} is not "
                                     "reachable (connection failed)")


def test_server_without_model_list(fake, tmp_path, capsys):
    fake, url = fake
    fake.no_models = True
    assert eval_main(mcq_args(url, tmp_path / "a", "--limit", "1")) == 2
    assert "name the model with --model" in capsys.readouterr().err
    assert eval_main(mcq_args(url, tmp_path / "b", "--limit", "1", "--model", "m")) == 0
    assert len(fake.chat) == 1


def test_trailing_v1_and_help_defaults(fake, tmp_path):
    fake, url = fake
    assert eval_main(mcq_args(url + "/v1/", tmp_path / "o", "--limit", "1")) == 0
    assert len(fake.chat) == 1
    helped = run_cli("mcq", "--help")
    assert helped.returncode == 0
    assert "(default: 512)" in helped.stdout and "(default: huatuo)" in helped.stdout


@pytest.mark.parametrize("refuse_zero", [False, True])
def test_loglik_mode(fake, tmp_path, refuse_zero):
    fake, url = fake
    fake.refuse_zero = refuse_zero
    out = tmp_path / "ll"
    assert eval_main(mcq_args(url, out, "--mode", "loglik")) == 0
    assert fake.chat == []
    ok = [c for c in fake.completions if c["max_tokens"] == (1 if refuse_zero else 0)]
    assert len(ok) == N_CMB - 3  # one request per single-answer question
    assert all(c["echo"] is True and c["logprobs"] == 1 for c in ok)
    assert ok[0]["prompt"][0].startswith("<问>：请回答下面选择题。")
    assert ok[0]["prompt"][0].endswith("\n<答>：答案：A")
    rows = read_jsonl(out / "predictions.jsonl")
    scored = [r for r in rows if r["answered"]]
    assert {r["prediction"] for r in scored} == {"B"}  # the fake favours the letter B
    assert scored[0]["output"]["B"] == pytest.approx(-0.1)
    overall = json.loads((out / "results.json").read_text())["overall"]
    assert overall["skipped"] == 3 and overall["n"] == N_CMB - 3
    assert overall["correct"] == sum(r["gold"] == "B" for r in scored)
    assert overall["accuracy_upstream"] is None and overall["extraction_failures"] == 0


def test_compare_two_runs(fake, tmp_path, capsys):
    fake, url = fake
    gold = {json.loads(line)["question"]: json.loads(line)["answer"]
            for line in CMB.read_text().splitlines()}

    def reply_for(correct: bool):
        def reply(user_text: str) -> str:
            q = next(q for q in gold if q in user_text)
            return f"答案是{gold[q]}" if correct else "答案是E"
        return reply

    fake.reply = reply_for(True)
    assert eval_main(mcq_args(url, tmp_path / "a")) == 0
    fake.reply = reply_for(False)
    assert eval_main(mcq_args(url, tmp_path / "b")) == 0
    capsys.readouterr()
    md_path = tmp_path / "cmp.md"
    assert eval_main(["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                      "--output", str(md_path)]) == 0
    out = capsys.readouterr().out
    # b = A right and B wrong on every question but the one whose gold is E (none here)
    assert "RUN_B is worse: -100.0 points, p=0.000122" in out
    assert "| exam_type=药师考试 | 3 |" in out
    data = json.loads(md_path.with_suffix(".json").read_text())
    assert data["b"] == N_CMB and data["c"] == 0
    assert eval_main(["compare", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert "no significant difference" in capsys.readouterr().out


def test_judge_pairwise_and_rubric(fake, tmp_path, capsys):
    fake, url = fake

    def judge(text: str) -> str:
        if "[Assistant 1]" in text:
            first = text.split("[Assistant 1]")[1]
            # prefers the longer answer; answers "equal" on pw-4's near-identical pair
            a1 = first.split("[End of Assistant 1]")[0]
            a2 = text.split("[Assistant 2]")[1].split("[End of Assistant 2]")[0]
            if "1.5-2" in a1 and "1.5-2" in a2:
                return "They match.\nAssistant 1 is equal to Assistant 2"
            return "Assistant 1 is " + ("better than" if len(a1) > len(a2) else "worse than") \
                + " Assistant 2"
        if "Rubric criterion" in text:
            if "emergency services" in text:
                return "I refuse to answer in JSON."  # never parsable -> a failure
            met = "Answers in Chinese" in text or "rest, fluids" in text
            return json.dumps({"explanation": "checked", "criteria_met": met})
        return "多休息，多喝水。"  # the model under test

    fake.reply = judge
    out = tmp_path / "pw"
    assert eval_main(["judge", "pairwise", "--pairs", str(SAMPLES / "sample_pairwise.jsonl"),
                      "--judge-base-url", url, "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["win"], results["tie"], results["loss"]) == (2, 1, 1)
    assert len(fake.chat) == 8  # 4 pairs, both orders
    fake.chat.clear()
    out = tmp_path / "rb"
    code = eval_main(["judge", "rubric", "--data", str(SAMPLES / "sample_rubric.jsonl"),
                      "--base-url", url, "--judge-base-url", url, "--output-dir", str(out),
                      "--judge-retries", "2"])
    assert code == 1  # one example could not be graded
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == 1 and results["n"] == 2
    # rb-1: 3 + 1 of 10 positive points; rb-3: nothing met -> 0
    assert results["score"] == pytest.approx((0.4 + 0.0) / 2)
    lo, hi = results["ci95"]
    assert lo <= results["score"] <= hi
    rows = read_jsonl(out / "judgements.jsonl")
    assert rows[1]["failed"] and "unparsable" in rows[1]["error"]
    # the unparsable judgement was asked judge_retries times per rubric item of rb-2
    assert sum("emergency services" in c for c in fake.chat) == 2
