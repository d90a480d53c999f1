"""Pairwise preference scores: Arena-Hard verdicts, position swap, win rate, Bradley-Terry, length control.

Run as: a library; `kofin.eval.pairwise` parses the judge's verdicts with `parse_arena_verdict`,
combines the two position-swapped games with `combine_games`, and the report's numbers come from
`bradley_terry`, `bootstrap_bradley_terry` and `length_controlled_win_rate`.

- A game is one judge call: answers shown as A and B, verdict `[[A>>B]]`, `[[A>B]]`, `[[A=B]]`,
  `[[B>A]]` or `[[B>>A]]` (Arena-Hard's labels). Each prompt is judged twice with the positions
  swapped. Scores are from the evaluated model's side: win 1, tie 0.5, loss 0 (a strong verdict
  counts as a win; its strength is kept in the record). A verdict the judge did not write in
  that format is a tie, counted as unparsed.
- A prompt's outcome is the mean of its two games. When the two games name opposite winners the
  judge preferred a position, not an answer: the outcome is a tie (the mean already is 0.5) and
  the prompt counts toward the position-bias rate.
- Bradley-Terry strengths (log scale, the baseline fixed at 0) are fitted by the MM algorithm
  (Hunter 2004) with ties as half a win each way, and bootstrapped over prompts.
- The length-controlled win rate follows AlpacaEval-LC: a logistic regression of the outcome on
  tanh(length difference / its standard deviation); the LC win rate is the predicted win
  probability at zero length difference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import overload

import numpy as np

VERDICT = re.compile(r"\[\[\s*([AB])\s*(>>|>|=|<<|<)\s*([AB])\s*\]\]")
VERDICT_LABELS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")


def parse_arena_verdict(text: str) -> str | None:
    """The last Arena-Hard verdict in a judge's output, normalised to one of VERDICT_LABELS; None if absent."""
    found = VERDICT.findall(text or "")
    if not found:
        return None
    left, op, right = found[-1]
    if left == right:
        return None  # "[[A>A]]" compares nothing
    if op == "=":
        return "A=B"
    if op in ("<", "<<"):  # "A<B" is "B>A"
        left, right, op = right, left, op.replace("<", ">")
    return f"{left}{op}{right}"


def score_for_first(label: str | None) -> float:
    """The score of the answer shown as A: 1 win, 0.5 tie (or no verdict), 0 loss."""
    if label is None or label == "A=B":
        return 0.5
    return 1.0 if label.startswith("A") else 0.0


def combine_games(model_first: str | None, base_first: str | None) -> tuple[float, bool]:
    """(the model's outcome on this prompt, whether the verdict flipped with position)."""
    a = score_for_first(model_first)  # game 1: the model's answer is A
    b = 1.0 - score_for_first(base_first)  # game 2: the model's answer is B
    flipped = {a, b} == {0.0, 1.0}
    return (a + b) / 2, flipped


def bradley_terry(
    games: Sequence[tuple[int, int, float]], players: int, anchor: int = 0, iterations: int = 500, tol: float = 1e-10
) -> np.ndarray:
    """Log-strengths from games (i, j, score of i in [0, 1]), player `anchor` fixed at 0.

    MM updates p_i = W_i / sum_j n_ij / (p_i + p_j); a tiny pseudo-count (0.01 win each way
    against the anchor) keeps an unbeaten player finite.
    """
    wins = np.zeros((players, players))
    for i, j, s in games:
        wins[i, j] += s
        wins[j, i] += 1.0 - s
    for i in range(players):
        if i != anchor:
            wins[i, anchor] += 0.01
            wins[anchor, i] += 0.01
    n = wins + wins.T
    p = np.ones(players)
    total = wins.sum(axis=1)
    for _ in range(iterations):
        denom = (n / (p[:, None] + p[None, :] + 1e-300)).sum(axis=1)
        new = np.where(denom > 0, total / np.maximum(denom, 1e-300), p)
        new = new / new[anchor]
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            p = new
            break
        p = new
    return np.log(p)


def bootstrap_bradley_terry(
    games_by_prompt: Sequence[Sequence[tuple[int, int, float]]],
    players: int,
    anchor: int = 0,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(strengths, 2.5% and 97.5% percentiles) with prompts resampled: a prompt's games stay together."""
    flat = [g for games in games_by_prompt for g in games]
    point = bradley_terry(flat, players, anchor)
    if not games_by_prompt:
        return point, point, point
    rng = np.random.default_rng(seed)
    draws = np.array(
        [
            bradley_terry(
                [g for k in rng.integers(0, len(games_by_prompt), len(games_by_prompt)) for g in games_by_prompt[k]],
                players,
                anchor,
            )
            for _ in range(resamples)
        ]
    )
    return point, np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


@overload
def _sigmoid(x: np.ndarray) -> np.ndarray: ...
@overload
def _sigmoid(x: float) -> float: ...
def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def length_controlled_win_rate(outcomes: Sequence[float], length_diffs: Sequence[float], l2: float = 1e-3) -> float:
    """AlpacaEval-LC: fit outcome ~ sigmoid(a + b * tanh(d / sd(d))) (outcomes in [0, 1], ties 0.5);
    return sigmoid(a), the win rate had the two answers been equally long."""
    y = np.asarray(outcomes, dtype=float)
    if y.size == 0:
        return 0.5
    d = np.asarray(length_diffs, dtype=float)
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    design = np.column_stack([np.ones_like(x), x])
    w = np.zeros(2)
    ridge = np.diag(
        [1e-9, l2]
    )  # the slope is kept finite when length separates wins from losses; the intercept is not shrunk
    for _ in range(100):  # Newton steps on the fractional logistic likelihood
        mu = _sigmoid(design @ w)
        grad = design.T @ (y - mu) - ridge @ w
        hess = design.T @ (design * (mu * (1 - mu))[:, None]) + ridge
        step = np.linalg.solve(hess, grad)
        w += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(_sigmoid(w[0]))


def win_probability(strength_diff: float) -> float:
    """Bradley-Terry's P(i beats j) from log-strength s_i - s_j."""
    return 1.0 / (1.0 + math.exp(-strength_diff))
