"""Judging step of pairwise tasks inside `kofin eval`: every model against the baseline, then the scores.

Run as: a library; `kofin.eval.run.main` calls `judge_tasks` once every model has answered.

For each pairwise task: the baseline's records are marked as its own reference (0.5 by
definition, no judge call), every other model's records are judged against the baseline's
(`kofin.eval.pairwise.judge_against_baseline`, resumable per record), and metrics.json gets the
task's judge, the Korean judge template and Bradley-Terry strengths with bootstrap intervals
(`kofin.eval.preference`). The judge is loaded only when a record needs judging.
"""

from __future__ import annotations

from typing import Any

from kofin.eval.pairwise import JUDGE_TEMPLATE, TEMPLATE_ID, judge_against_baseline, mark_baseline
from kofin.eval.preference import bootstrap_bradley_terry


class _LazyJudge:
    def __init__(self, load):
        self._load, self._backend = load, None

    def __getattr__(self, name: str) -> Any:
        if self._backend is None:
            self._backend = self._load()
        return getattr(self._backend, name)


def pairwise_judge(cfg: Any) -> tuple[Any, str]:
    """The judge backend the config names (loaded on first use) and its identity (part of each judgement's key)."""
    spec = cfg.pairwise_judge
    if spec.endpoint is not None:
        from kofin.eval.endpoint import EndpointBackend

        return (
            EndpointBackend(spec.endpoint, spec.served_model, batch_size=cfg.batch_size, api_key_env=spec.api_key_env),
            f"{spec.endpoint} {spec.served_model}",
        )
    from kofin.eval.engine import TransformersBackend
    from kofin.eval.run import EvalModel, resolve_model, weights_digest

    path, manifest = resolve_model(EvalModel(name="judge", path=spec.path), where="pairwise_judge.path")
    return (
        _LazyJudge(
            lambda: TransformersBackend(
                path, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype, cpu_threads=cfg.cpu_threads
            )
        ),
        f"{path} {weights_digest(path, manifest)[:16]}",
    )


def judge_tasks(cfg: Any, specs: list, examples: dict, stores: dict, results: dict, kept: dict) -> dict[str, Any]:
    judge, judge_name = pairwise_judge(cfg)
    base = cfg.base_model.name
    names = [m.name for m in cfg.models]
    out: dict[str, Any] = {}
    for spec in specs:
        exs = examples[spec.name]
        base_records = stores[base].records_in_order(spec, exs)
        mark_baseline(base_records)
        stores[base].rewrite(spec, base_records)
        judged = 0
        for name in names:
            if name == base:
                continue
            records = stores[name].records_in_order(spec, exs)
            judged += judge_against_baseline(
                records, base_records, judge, judge_name, cfg.pairwise_judge.max_new_tokens
            )
            stores[name].rewrite(spec, records)
        per_prompt: list[list[tuple[int, int, float]]] = [[] for _ in exs]
        for name in names:
            results[name][spec.name] = stores[name].metrics(spec, exs)
            kept[name][spec.name] = stores[name].ordered()
            if name != base:
                for k, r in enumerate(kept[name][spec.name]):
                    per_prompt[k].append((names.index(name), names.index(base), r["judgement"]["score"]))
        strength, low, high = bootstrap_bradley_terry(
            per_prompt, len(names), names.index(base), cfg.bootstrap_resamples, cfg.seed
        )
        out[spec.name] = {
            "judge": judge_name,
            "judge_template_id": TEMPLATE_ID,
            "judge_template": JUDGE_TEMPLATE,
            "prompts_judged": judged,
            "bradley_terry": {
                n: {
                    "strength": round(float(strength[i]), 6),
                    "low": round(float(low[i]), 6),
                    "high": round(float(high[i]), 6),
                }
                for i, n in enumerate(names)
            },
        }
    return out
