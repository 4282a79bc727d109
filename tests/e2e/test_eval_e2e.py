"""`huatuo eval mcq` against a real `huatuo serve` (tiny random model, real vLLM engine).

`generate` mode runs the whole pipeline on the bundled CMB sample. `loglik` mode's per-option
scores must equal log-probabilities computed independently with transformers on the same
checkpoint (fp32, same prompt token ids, no BOS), and its choices their argmax.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from evaluation import prompts
from evaluation.cli import main as eval_main
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "evaluation" / "data"
TOLERANCE = 1e-3


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def continuation_logprob(tiny_model_dir: Path) -> Callable[[str, str], float]:
    """log P(continuation | prompt) from transformers, tokenising prompt+continuation once."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()

    def score(prompt: str, continuation: str) -> float:
        ids = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        # the letter is its own pre-token: the prompt's tokens are a prefix of the full text's
        assert ids[: len(prompt_ids)] == prompt_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)
        return sum(lp[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))

    return score


def test_generate_mode(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["mcq", "--base-url", server.base_url, "--data", str(SAMPLES / "sample_cmb.jsonl"),
            "--output-dir", str(out), "--max-tokens", "24", "--concurrency", "4"]
    assert eval_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert overall["n"] == 14 and overall["unanswered"] == 0
    assert 0 <= overall["correct"] <= 14 and overall["accuracy_upstream"] is not None
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 14 and all(isinstance(r["output"], str) for r in rows)
    # every answer is either extracted or counted as a failure, never guessed
    assert sum(r["extraction_failed"] for r in rows) == overall["extraction_failures"]
    assert all(r["prediction"] is None for r in rows if r["extraction_failed"])
    assert results["meta"]["model"]
    assert (out / "accuracy_by_group.png").exists() and (out / "report.md").exists()
    cached = (out / "cache.jsonl").read_text()
    assert eval_main(args) == 0  # a rerun answers everything from the cache
    assert (out / "cache.jsonl").read_text() == cached


@pytest.mark.parametrize("data, profile, single", [
    ("sample_medqa.jsonl", "en", 12),
    ("sample_cmb.jsonl", "huatuo", 11),
])
def test_loglik_mode_matches_transformers(server: ServerProcess, tmp_path: Path, data: str,
                                          profile: str, single: int,
                                          continuation_logprob) -> None:
    out = tmp_path / "ll"
    assert eval_main(["mcq", "--base-url", server.base_url, "--data", str(SAMPLES / data),
                      "--output-dir", str(out), "--mode", "loglik", "--profile", profile,
                      "--concurrency", "2"]) == 0
    rows = [r for r in read_jsonl(out / "predictions.jsonl") if r["answered"]]
    assert len(rows) == single
    decided = 0
    for row in rows:
        reference = {k: continuation_logprob(row["prompt"], prompts.loglik_continuation(k, profile))
                     for k in row["output"]}
        for k, value in reference.items():
            assert row["output"][k] == pytest.approx(value, abs=TOLERANCE), (row["id"], k)
        ranked = sorted(reference.values(), reverse=True)
        if ranked[0] - ranked[1] > 2 * TOLERANCE:  # not a near-tie of a random model
            assert row["prediction"] == max(reference, key=reference.get)
            decided += 1
        assert row["boundary_merged"] is False
    assert decided >= len(rows) // 2
