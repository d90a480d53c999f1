"""Intervals and paired tests for the eval report: is a model's difference from the baseline real?

Run as: a library; `kofin.eval.run` calls `cell_interval` for every model x task cell and
`paired_test` for every model-vs-baseline difference, and writes both into metrics.json.

- A cell whose metric is a proportion of per-example 0/1 outcomes (accuracy, exact match) gets a
  Wilson score interval: it stays inside [0, 1] and is honest at n = 5, where the normal
  approximation is not.
- Any other metric (weighted F1, MRR, token F1 ...) gets a percentile bootstrap over examples:
  the metric is recomputed on resampled example sets, so a corpus-level metric such as weighted F1
  is resampled as the metric it is, not as a mean of per-example numbers.
- A difference on per-example correctness is tested with McNemar's exact test (the binomial test
  on the discordant pairs: examples only one model got right), the right test when both models
  answered the same questions. Otherwise a paired bootstrap (both models' records resampled with
  the same indices). Its interval is always the paired bootstrap's percentile interval of the
  difference.

The resampling is seeded: the same records give the same intervals on every rerun.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
ALPHA = 0.05

Statistic = Callable[[Sequence[dict]], float]


@dataclass
class Interval:
    value: float
    low: float
    high: float
    n: int
    method: str  # "wilson" | "bootstrap"

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class PairedTest:
    diff: float  # model minus baseline: positive = the model is better on a higher-is-better metric
    low: float
    high: float
    p_value: float
    test: str  # "mcnemar" | "paired_bootstrap"
    n: int
    significant: bool  # p < ALPHA

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b, c = examples only the model / only the baseline got right.

    The same as `scipy.stats.binomtest(b, b + c, 0.5).pvalue` (the distribution is symmetric, so
    doubling the smaller tail is exact); 1.0 when no example is discordant.
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(
    records: Sequence[dict], statistic: Statistic, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over examples."""
    if not records:
        return 0.0, 0.0
    values = [statistic([records[i] for i in row]) for row in _indices(len(records), resamples, seed)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap(
    model: Sequence[dict],
    baseline: Sequence[dict],
    statistic: Statistic,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Interval of statistic(model) - statistic(baseline) with both resampled by the same indices, and
    a two-sided p-value: twice the share of resampled differences on the far side of zero."""
    if len(model) != len(baseline):
        raise ValueError(
            f"paired records differ in length ({len(model)} vs {len(baseline)}): "
            "both models must be scored on the same examples"
        )
    if not model:
        return 0.0, 0.0, 1.0
    diffs = np.array(
        [
            statistic([model[i] for i in row]) - statistic([baseline[i] for i in row])
            for row in _indices(len(model), resamples, seed)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    if np.all(diffs == 0):
        return 0.0, 0.0, 1.0
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return float(low), float(high), float(min(1.0, p))


def cell_interval(
    records: Sequence[dict],
    statistic: Statistic,
    outcome: Callable[[dict], bool] | None,
    resamples: int = 1000,
    seed: int = 0,
) -> Interval:
    """n and a 95% interval for one model x task metric; `outcome` given = a proportion (Wilson)."""
    value = statistic(records) if records else 0.0
    if outcome is not None:
        low, high = wilson_interval(sum(bool(outcome(r)) for r in records), len(records))
        return Interval(value, low, high, len(records), "wilson")
    low, high = bootstrap_interval(records, statistic, resamples, seed)
    return Interval(value, low, high, len(records), "bootstrap")


def paired_test(
    model: Sequence[dict],
    baseline: Sequence[dict],
    statistic: Statistic,
    outcome: Callable[[dict], bool] | None,
    resamples: int = 1000,
    seed: int = 0,
) -> PairedTest:
    """The model's difference from the baseline on the same examples, with its interval and p-value."""
    diff = (statistic(model) - statistic(baseline)) if model else 0.0
    low, high, p_boot = paired_bootstrap(model, baseline, statistic, resamples, seed)
    if outcome is not None:
        b = sum(bool(outcome(m)) and not outcome(r) for m, r in zip(model, baseline, strict=True))
        c = sum(not outcome(m) and bool(outcome(r)) for m, r in zip(model, baseline, strict=True))
        p, test = mcnemar_exact(b, c), "mcnemar"
    else:
        p, test = p_boot, "paired_bootstrap"
    return PairedTest(diff, low, high, p, test, len(model), p < ALPHA)
