"""Choosing the answer gate for one knowledge base from labelled questions: `kofin ask --calibrate`.

Run as:
    kofin ask --kb runs/kb-demo --calibrate benchmarks/dev/kb_answerable.jsonl benchmarks/dev/kb_unanswerable.jsonl

How much of a question its best sources must cover before kofin answers (`min_coverage`) depends
on the knowledge base: a bank's own manuals are written in the words tellers use (answerable
questions on the bundled KB cover ≥ 0.40 of themselves in 95 of 100 cases), statutes are not
(colloquial questions on the statute corpus often cover under 0.2 and are still answerable). One
threshold for both refuses too much on one and too little on the other, so each KB's gate is
chosen on questions about it: every labelled question goes through the answer path
(`answer_question`, with the gate open), and the highest threshold whose answerable refusals stay
within `max_refused` at `confidence` (an upper bound, not the dev set's own rate) is proposed,
with what it refuses of the unanswerable. Give it follow-ups too: the chat answers them all day.

A file is JSONL; a line has `question`, `gold` (a list: empty means the KB cannot answer it) and
optionally `history` (earlier messages, OpenAI chat format) — the format of benchmarks/dev/.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from kofin.errors import KofinError


@dataclass
class Measured:
    answerable: bool
    evidence: float
    refused_anyway: bool  # refused by a rule the threshold does not move (a live value, a statute the KB lacks)


@dataclass
class GateChoice:
    min_coverage: float
    answerable_refused: float
    unanswerable_refused: float
    n_answerable: int
    n_unanswerable: int
    bound: float = 0.0  # upper bound on the answerable refusal rate at `confidence`
    confidence: float = 0.8
    table: list[tuple[float, float, float]] = field(
        default_factory=list
    )  # (threshold, answerable refused, unanswerable refused)

    def report(self) -> str:
        lines = ["min_coverage  answerable refused  unanswerable refused"]
        lines += [f"{t:12.2f}  {a:18.1%}  {u:20.1%}" for t, a, u in self.table]
        lines.append(
            f"proposed: min_coverage: {self.min_coverage:.2f}  (answerable refused {self.answerable_refused:.1%} of "
            f"{self.n_answerable}, at most {self.bound:.1%} with {self.confidence:.0%} confidence; "
            f"unanswerable refused {self.unanswerable_refused:.1%} of {self.n_unanswerable}); "
            "set it in the ask/serve config (`min_coverage: …`) for this knowledge base"
        )
        return "\n".join(lines)


def read_labelled(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise KofinError(f"calibration file {path}: cannot read it ({err.strerror})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise KofinError(f"{path}:{number}: not JSON ({err.msg}); one object per line") from None
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("question"), str)
                or not isinstance(row.get("gold"), list)
            ):
                raise KofinError(
                    f'{path}:{number}: needs "question" (text) and "gold" (a list; [] when the KB cannot answer it)'
                )
            rows.append(row)
    if not rows:
        raise KofinError(f"calibration files {', '.join(map(str, paths))}: no questions")
    return rows


def measure(retriever, settings, rows: list[dict]) -> list[Measured]:
    """Each question through the answer path with the gate open, read as an administrator would."""
    from kofin.serve.respond import answer_question

    open_gate = settings.model_copy(update={"min_coverage": 0.0})
    groups = tuple(retriever.kb.group_masks) or ("all",)
    out = []
    for row in rows:
        result = answer_question(retriever, open_gate, row["question"], groups, history=row.get("history"))
        out.append(Measured(bool(row["gold"]), result.evidence, not result.found))
    return out


def refusal_bound(refused: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a refusal rate seen as `refused` of `n`."""
    from scipy.stats import beta

    return 1.0 if refused >= n else float(beta.ppf(confidence, refused + 1, n - refused))


def refused_count(group: list[Measured], threshold: float) -> int:
    """How many of `group` a gate at `threshold` refuses (scope refusals count whatever the gate)."""
    return sum(m.refused_anyway or m.evidence < threshold for m in group)


def refused_share(group: list[Measured], threshold: float) -> float:
    return refused_count(group, threshold) / len(group) if group else 0.0


def choose(measured: list[Measured], max_refused: float = 0.05, confidence: float = 0.8) -> GateChoice:
    """The highest threshold whose answerable refusal rate stays within `max_refused` with
    `confidence`: on 40 dev questions a point estimate of 5% is two questions, and the gate it buys
    refuses more of questions phrased as nobody on the dev set did (bundled KB: 2.5% of dev
    answerable refused at 0.39, 22.5% of a blind held-out set)."""
    answerable = [m for m in measured if m.answerable]
    unanswerable = [m for m in measured if not m.answerable]
    if not answerable:
        raise KofinError("calibration needs answerable questions (a non-empty gold) as well as unanswerable ones")

    # Candidate thresholds: each answerable question's own evidence rounded down to 0.01 (so it
    # and those at the same level stay answered), refusing those below.
    candidates = sorted({0.0} | {math.floor(m.evidence * 100) / 100 for m in answerable})
    within = [
        t for t in candidates if refusal_bound(refused_count(answerable, t), len(answerable), confidence) <= max_refused
    ]
    best = max(within, default=0.0)
    table = [(t / 20, refused_share(answerable, t / 20), refused_share(unanswerable, t / 20)) for t in range(0, 13)]
    bound = refusal_bound(refused_count(answerable, best), len(answerable), confidence)
    return GateChoice(
        best,
        refused_share(answerable, best),
        refused_share(unanswerable, best),
        len(answerable),
        len(unanswerable),
        bound,
        confidence,
        table,
    )
