"""`huatuo unify` against a live `huatuo serve` (tiny model), including resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server_process import ROOT, ServerProcess

pytestmark = pytest.mark.e2e
N = 40


def unify_cmd(server: ServerProcess, tmp: Path) -> list[str]:
    # Short prompts: the shared server's context is 512 tokens.
    (tmp / "q.txt").write_text("Ask one {language} question about: {text}\nQuestion: ")
    (tmp / "a.txt").write_text("Answer in {language}: {question}\nUsing: {text}\nAnswer: ")
    return [sys.executable, "-m", "huatuo", "unify", "--input", str(tmp / "passages.jsonl"),
            "--output", str(tmp / "out.jsonl"), "--base-url", f"{server.base_url}/v1",
            "--concurrency", "1", "--question-max-tokens", "12", "--answer-max-tokens", "24",
            "--max-question-chars", "100000", "--question-chars", "120",
            "--answer-chars", "160", "--question-prompt-file", str(tmp / "q.txt"),
            "--answer-prompt-file", str(tmp / "a.txt"), "--no-progress"]


def ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_unify_against_live_server_resumes_after_kill(server: ServerProcess,
                                                      tmp_path: Path) -> None:
    (tmp_path / "passages.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "text": f"高血压患者应少吃盐，规律服药。第{i}段。"},
                   ensure_ascii=False) + "\n" for i in range(N)))
    out, dropped = tmp_path / "out.jsonl", tmp_path / "out.dropped.jsonl"
    cmd = unify_cmd(server, tmp_path)

    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(ids(out)) + len(ids(dropped)) < 3:
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "unify produced nothing"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # a crash: no clean shutdown
    first.wait(30)
    done_before = set(ids(out)) | set(ids(dropped))
    assert 3 <= len(done_before) < N, "the run finished before it could be interrupted"
    # A write cut by the crash, as a kill mid-line would leave it.
    with open(out, "a") as f:
        f.write('{"id": "p_cut", "conversations": [{"fro')

    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{len(done_before)} already done" in second.stdout

    written, gave_up = ids(out), ids(dropped)
    assert sorted(written + gave_up) == sorted(f"p{i}" for i in range(N))  # each id once
    assert len(written) > N // 2
    for line in out.read_text().splitlines():
        record = json.loads(line)
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"]
        assert turns[0]["value"] and turns[1]["value"]
    # The output is training data as is.
    from adapters.training.readers import read_samples

    assert len(read_samples(out, "conversations").samples) == len(written)
