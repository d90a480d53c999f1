"""Intervals and paired tests of the eval report against scipy and hand-computed values."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from kofin.eval.scoring import LOWER_IS_BETTER
from kofin.eval.significance import (
    bootstrap_interval,
    cell_interval,
    mcnemar_exact,
    paired_bootstrap,
    paired_test,
    wilson_interval,
)
from kofin.eval.verdict import BETTER, NO_DIFFERENCE, WORSE, direction


def _mean(rs):
    return sum(r["x"] for r in rs) / len(rs)


@pytest.mark.parametrize("k,n", [(0, 5), (2, 5), (3, 5), (5, 5), (37, 120), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_by_hand():
    # p = 0.6, n = 5, z = 1.96: centre (0.6 + 0.384) / 1.768 = 0.5566, half 1.96*sqrt(0.048+0.0384)/1.768 = 0.3259
    low, high = wilson_interval(3, 5)
    assert (round(low, 4), round(high, 4)) == (0.2307, 0.8824)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (5, 1), (2, 9), (10, 10), (1, 12)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_by_hand():
    # 6 discordant pairs all one way: 2 * 0.5**6 = 0.03125; 4 of them: 2 * 0.5**4 = 0.125 (not significant)
    assert mcnemar_exact(6, 0) == pytest.approx(0.03125)
    assert mcnemar_exact(0, 4) == pytest.approx(0.125)


def test_paired_test_uses_mcnemar_on_correctness():
    # 10 examples: the model gets 8 right, the baseline 2; on the 6 where they differ the model is right.
    model = [{"ok": i < 8} for i in range(10)]
    base = [{"ok": i < 2} for i in range(10)]
    stat = lambda rs: sum(r["ok"] for r in rs) / len(rs)  # noqa: E731
    t = paired_test(model, base, stat, lambda r: r["ok"], resamples=400, seed=1)
    assert t.test == "mcnemar" and t.n == 10
    assert t.diff == pytest.approx(0.6) and t.p_value == pytest.approx(0.03125) and t.significant
    assert t.low <= 0.6 <= t.high and t.low > 0
    # Two questions of five (the 0.6 vs 0.2): McNemar says not significant.
    small = paired_test(model[:5], [{"ok": i < 1} for i in range(5)], stat, lambda r: r["ok"], resamples=200)
    assert small.diff == pytest.approx(0.8) and small.p_value == pytest.approx(0.125) and not small.significant


def test_paired_bootstrap_agrees_with_a_normal_approximation():
    import numpy as np

    rng = np.random.default_rng(3)
    a = rng.normal(0.55, 0.1, 400)
    b = a - 0.05 + rng.normal(0, 0.05, 400)  # the model is 0.05 better, paired
    low, high, p = paired_bootstrap([{"x": v} for v in a], [{"x": v} for v in b], _mean, resamples=500, seed=0)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.004)
    assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.004)
    assert p < 0.01
    # Identical models: no difference at all, p = 1.
    assert paired_bootstrap([{"x": v} for v in a], [{"x": v} for v in a], _mean, resamples=50) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([{"x": 1}], [], _mean)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    recs = [{"x": v} for v in (0.1, 0.9, 0.4, 0.7, 0.3, 0.8)]
    first = bootstrap_interval(recs, _mean, resamples=300, seed=7)
    assert first == bootstrap_interval(recs, _mean, resamples=300, seed=7)
    assert first[0] < _mean(recs) < first[1]
    assert first != bootstrap_interval(recs, _mean, resamples=300, seed=8)


def test_cell_interval_wilson_for_proportions_bootstrap_otherwise():
    recs = [{"ok": i < 3, "x": i / 10} for i in range(5)]
    prop = cell_interval(recs, lambda rs: sum(r["ok"] for r in rs) / len(rs), lambda r: r["ok"])
    assert (prop.method, prop.n, prop.value) == ("wilson", 5, 0.6)
    assert (prop.low, prop.high) == pytest.approx(wilson_interval(3, 5))
    boot = cell_interval(recs, _mean, None, resamples=100)
    assert boot.method == "bootstrap" and boot.low <= boot.value <= boot.high


def test_direction_respects_sign_and_lower_is_better():
    sig = {"diff": -0.2, "significant": True}
    assert direction("acc", sig) == WORSE
    assert direction(next(iter(LOWER_IS_BETTER)), sig) == BETTER
    assert direction("acc", {"diff": 0.4, "significant": False}) == NO_DIFFERENCE
