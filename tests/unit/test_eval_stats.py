"""Statistics against known values."""

from __future__ import annotations

import pytest

from evaluation.compare import Paired, verdict
from evaluation.judge import example_score, parse_pairwise, parse_rubric
from evaluation.stats import bootstrap_mean_ci, mcnemar_exact, wilson


@pytest.mark.parametrize("b, c, p", [
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
    (9, 1, 0.021484375),
    (5, 5, 1.0),
    (0, 0, 1.0),
    (0, 6, 0.03125),  # 2 / 64
    (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-12)


def test_wilson_known_values():
    # statsmodels proportion_confint(8, 10, method="wilson")
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4901624715, abs=1e-8)
    assert hi == pytest.approx(0.9433178485, abs=1e-8)
    assert wilson(0, 10)[0] == 0.0 and wilson(0, 10)[1] == pytest.approx(0.2775328, abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)


def test_bootstrap_deterministic():
    values = [0.0, 0.5, 1.0, 0.25, 0.75, 1.0, 0.0, 0.6]
    a = bootstrap_mean_ci(values, seed=3)
    assert a == bootstrap_mean_ci(values, seed=3)
    assert a != bootstrap_mean_ci(values, seed=4)
    mean = sum(values) / len(values)
    assert a[0] < mean < a[1]
    assert bootstrap_mean_ci([0.5] * 5, seed=1) == (0.5, 0.5)


def test_verdict_lines():
    assert verdict(Paired(100, 60, 60, 5, 5)).startswith("no significant difference")
    assert "p=1" in verdict(Paired(100, 60, 60, 5, 5))
    worse = verdict(Paired(100, 60, 52, 9, 1))
    assert worse == "RUN_B is worse: -8.0 points, p=0.0215"
    assert verdict(Paired(100, 52, 60, 1, 9)).startswith("RUN_B is better: +8.0 points")


def test_judge_parsers_and_rubric_score():
    assert parse_pairwise("...\nAssistant 1 is better than Assistant 2") == (10, 0)
    assert parse_pairwise("Assistant 1 is `worse than` Assistant 2") == (0, 10)
    assert parse_pairwise("Assistant 2 is better than Assistant 1") == (0, 10)
    assert parse_pairwise("Assistant 1 is equal to Assistant 2") == (5, 5)
    assert parse_pairwise("Both are fine.") is None
    assert parse_rubric('```json\n{"explanation": "ok", "criteria_met": true}\n```') == \
        {"explanation": "ok", "criteria_met": True}
    assert parse_rubric('sure: {"explanation": "no", "criteria_met": false}')["criteria_met"] \
        is False
    assert parse_rubric('{"criteria_met": "yes"}') is None
    assert parse_rubric("not json") is None
    rubrics = [{"points": 6}, {"points": 3}, {"points": -5}, {"points": 1}]
    assert example_score(rubrics, [True, True, False, True]) == 1.0
    assert example_score(rubrics, [True, False, True, False]) == pytest.approx(0.1)
    assert example_score(rubrics, [False, False, True, False]) == 0.0  # clipped
    assert example_score([{"points": -1}], [True]) is None
