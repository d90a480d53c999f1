"""The numbers behind the report's verdict: intervals on every cell, paired tests against the baseline.

Run as: a library; `kofin.eval.run` calls `significance(...)` on the records it keeps and writes
the result into metrics.json under `intervals`, `comparisons` and `verdict`.

- `intervals[model][task][metric]`: value, n and the 95% interval (`kofin.eval.significance`).
- `comparisons[model][task][metric]`: model minus baseline on the same examples, its 95% paired
  bootstrap interval, the p-value (McNemar on per-example correctness, paired bootstrap otherwise)
  and whether it is significant at 5%. Sign convention: always model - baseline; on a metric in
  `LOWER_IS_BETTER` a negative difference is the improvement. The forgetting check reads the same
  numbers on the general tasks: a negative difference there is forgetting.
- `verdict[model]`: on each task's primary metric, how many tasks got significantly better,
  worse, or showed no significant difference, and what the model cost to make (`kofin.eval.cost`).
"""

from __future__ import annotations

from typing import Any

from kofin.eval.scoring import LOWER_IS_BETTER, metric_defs
from kofin.eval.significance import cell_interval, paired_test
from kofin.eval.tasks import TaskSpec

# The metric a task's verdict is decided on, per kind (the report leads with it). RAG's is citation-format
# compliance: retrieval (MRR) is the same for every evaluated model, the answer and its citations are not.
PRIMARY = {
    "mcq": "acc",
    "classification": "weighted_f1",
    "numeric_qa": "exact_match",
    "rag": "citation_format_ok",
    "pairwise": "win_rate",
}

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no_difference"


def direction(metric: str, test: dict) -> str:
    """better / worse / no_difference for the model, from a comparison's significance and sign."""
    if not test["significant"] or test["diff"] == 0:
        return NO_DIFFERENCE
    improved = test["diff"] < 0 if metric in LOWER_IS_BETTER else test["diff"] > 0
    return BETTER if improved else WORSE


def significance(
    specs: list[TaskSpec],
    records: dict[str, dict[str, list[dict]]],
    base: str,
    costs: dict[str, dict],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`records[model][task]`: each model's records in example order (the same examples for every model)."""
    intervals: dict[str, dict] = {}
    comparisons: dict[str, dict] = {}
    for model, per_task in records.items():
        intervals[model] = {}
        for spec in specs:
            defs = metric_defs(spec, per_task[spec.name])
            intervals[model][spec.name] = {
                name: cell_interval(per_task[spec.name], d.statistic, d.outcome, resamples, seed).as_dict()
                for name, d in defs.items()
            }
        if model == base:
            continue
        comparisons[model] = {}
        for spec in specs:
            mine, theirs = per_task[spec.name], records[base][spec.name]
            defs = metric_defs(spec, mine)
            if not all("bertscore_f1" in r for r in theirs):
                defs.pop("bertscore_f1", None)
            comparisons[model][spec.name] = {
                name: paired_test(mine, theirs, d.statistic, d.outcome, resamples, seed).as_dict()
                for name, d in defs.items()
            }
    verdict = {}
    for model, tests in comparisons.items():
        counts = {BETTER: 0, WORSE: 0, NO_DIFFERENCE: 0}
        for spec in specs:
            counts[direction(PRIMARY[spec.kind], tests[spec.name][PRIMARY[spec.kind]])] += 1
        verdict[model] = {**counts, "cost": costs.get(model)}
    return {"intervals": intervals, "comparisons": comparisons, "verdict": verdict}
