"""Score a task's examples with a backend into per-example records, and records into task metrics.

Run as: a library; `kofin.eval.run` calls `score_examples` per (model, task) and `task_metrics`
on the records it keeps.

- mcq and classification are scored two ways, both reported: the option whose continuation has
  the highest log-likelihood (`pred_ll`; `pred_ll_norm` divides by the option's length in
  characters, exactly as lm-eval's acc_norm), and the option named by the greedy generation (`pred_gen`: a letter A-D,
  an option number, or the option's text).
- numeric_qa is scored on the generation: exact match after number normalisation, morpheme
  token F1 and ROUGE-L.
- rag is retrieval + answer + citations (`kofin.eval.rag`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kofin.eval import metrics as M
from kofin.eval.engine import TransformersBackend
from kofin.eval.tasks import LETTERS, Example, TaskSpec, prompt_for

# Metrics where a smaller value is better; every other metric is higher-is-better.
LOWER_IS_BETTER = frozenset({"citation_out_of_range", "citation_none", "position_bias_rate", "unparsed_verdicts"})


def continuations(spec: TaskSpec, ex: Example) -> list[str]:
    """What each option's log-likelihood is measured on: ' <option text>' after the prompt."""
    return [" " + c for c in ex.choices]


def parse_choice(spec: TaskSpec, ex: Example, generation: str) -> int | None:
    """The option a generated answer names, or None when it names none."""
    text = generation.strip()
    if spec.kind == "mcq":
        n = len(ex.choices)
        m = re.match(rf"\(?([A-{LETTERS[n - 1]}])(?![A-Za-z])", text)
        if m:
            return LETTERS.index(m.group(1))
        m = re.match(r"\(?(\d{1,2})(?!\d)", text)
        if m and 1 <= int(m.group(1)) <= n:
            return int(m.group(1)) - 1
    # An option's text: the one mentioned first (classification label words, or a restated option).
    found = [(text.find(c), i) for i, c in enumerate(ex.choices) if c and c in text]
    return min(found)[1] if found else None


def score_examples(
    spec: TaskSpec,
    examples: list[Example],
    backend: TransformersBackend,
    progress: Callable | None = None,
    citation_judge: Callable | None = None,
) -> list[dict[str, Any]]:
    if spec.kind == "rag":
        from kofin.eval.rag import score_rag

        return score_rag(spec, examples, backend, citation_judge)
    if spec.kind == "pairwise":  # answers only; judged against the baseline once every model has answered
        from kofin.eval.pairwise import answer_prompts

        return answer_prompts(spec, examples, backend)
    prompts = [prompt_for(spec, ex) for ex in examples]
    assert spec.max_new_tokens is not None, "TaskSpec's validator fills in the kind's default"
    generations = backend.generate(prompts, spec.max_new_tokens, progress=progress)
    records = []
    if spec.kind in ("mcq", "classification"):
        requests = [(p, c) for p, ex in zip(prompts, examples, strict=True) for c in continuations(spec, ex)]
        scores = iter(backend.loglikelihood(requests, progress=progress))
        for ex, gen in zip(examples, generations, strict=True):
            lls = [next(scores) for _ in ex.choices]
            logprob = [s.logprob for s in lls]
            norm = [s.logprob / len(c) for s, c in zip(lls, ex.choices, strict=True)]
            pred_gen = parse_choice(spec, ex, gen)
            records.append(
                _record(
                    ex,
                    gen,
                    gold=ex.answer,
                    logprob=[round(x, 6) for x in logprob],
                    logprob_norm=[round(x, 6) for x in norm],
                    pred_ll=_argmax(logprob),
                    pred_ll_norm=_argmax(norm),
                    pred_gen=pred_gen,
                )
            )
    else:
        for ex, gen in zip(examples, generations, strict=True):
            records.append(
                _record(
                    ex,
                    gen,
                    gold=ex.answer,
                    exact_match=M.exact_match(gen, str(ex.answer)),
                    token_f1=round(M.token_f1(gen, str(ex.answer)), 6),
                    rouge_l=round(M.rouge_l(gen, str(ex.answer)), 6),
                )
            )
    return records


def _record(ex: Example, generation: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": ex.id,
        "where": ex.where,
        "question": ex.question,
        "choices": ex.choices,
        "generation": generation,
        **fields,
    }


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # ties: the first option, as numpy


@dataclass(frozen=True)
class MetricDef:
    """How one metric is computed from a (model, task)'s records, and tested.

    `outcome` is the per-example 0/1 event for a metric that is a proportion (accuracy, exact
    match): its interval is Wilson's and its paired test McNemar's. None = bootstrap over records.
    """

    statistic: Callable[[Sequence[dict]], float]
    outcome: Callable[[dict], bool] | None = None


def _share(event: Callable[[dict], bool]) -> MetricDef:
    return MetricDef(lambda rs: M.mean([float(event(r)) for r in rs]), event)


def _mean_of(key: str) -> MetricDef:
    return MetricDef(lambda rs: M.mean([float(r[key]) for r in rs]))


def _gen(r: dict) -> int:
    return -1 if r["pred_gen"] is None else r["pred_gen"]  # an unparseable generation is wrong (-1 is never gold)


def metric_defs(spec: TaskSpec, records: Sequence[dict] = ()) -> dict[str, MetricDef]:
    """Every metric of the task's kind, in report order; bertscore_f1 when every record carries one."""
    if spec.kind == "rag":
        from kofin.eval.rag import rag_metric_defs

        out = rag_metric_defs(spec)
    elif spec.kind == "pairwise":
        from kofin.eval.preference import length_controlled_win_rate

        out = {
            "win_rate": MetricDef(lambda rs: M.mean([r["judgement"]["score"] for r in rs])),
            "lc_win_rate": MetricDef(
                lambda rs: length_controlled_win_rate(
                    [r["judgement"]["score"] for r in rs], [r["judgement"]["length_diff"] for r in rs]
                )
            ),
            "position_bias_rate": _share(lambda r: bool(r["judgement"]["flipped"])),
            "unparsed_verdicts": MetricDef(lambda rs: M.mean([r["judgement"]["unparsed"] / 2 for r in rs])),
        }
    elif spec.kind in ("mcq", "classification"):
        out = {
            "acc": _share(lambda r: r["pred_ll"] == r["gold"]),
            "acc_norm": _share(lambda r: r["pred_ll_norm"] == r["gold"]),
            "acc_gen": _share(lambda r: _gen(r) == r["gold"]),
        }
        if spec.kind == "classification":
            out["weighted_f1"] = MetricDef(
                lambda rs: M.weighted_f1([r["gold"] for r in rs], [r["pred_ll"] for r in rs])
            )
            out["weighted_f1_gen"] = MetricDef(lambda rs: M.weighted_f1([r["gold"] for r in rs], [_gen(r) for r in rs]))
    else:
        out = {
            "exact_match": _share(lambda r: bool(r["exact_match"])),
            "token_f1": _mean_of("token_f1"),
            "rouge_l": _mean_of("rouge_l"),
        }
    if records and all("bertscore_f1" in r for r in records):  # only when an encoder is configured
        out["bertscore_f1"] = _mean_of("bertscore_f1")
    return out


def task_metrics(spec: TaskSpec, records: list[dict[str, Any]]) -> dict[str, float]:
    """Aggregate one (model, task)'s records; every value is in [0, 1] (LOWER_IS_BETTER says which fall)."""
    return {name: round(d.statistic(records), 6) for name, d in metric_defs(spec, records).items()}
