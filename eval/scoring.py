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
from typing import Any, Callable

from kofin.eval import metrics as M
from kofin.eval.engine import TransformersBackend
from kofin.eval.tasks import LETTERS, Example, TaskSpec, prompt_for


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


def score_examples(spec: TaskSpec, examples: list[Example], backend: TransformersBackend,
                   progress: Callable | None = None, citation_judge: Callable | None = None) -> list[dict[str, Any]]:
    if spec.kind == "rag":
        from kofin.eval.rag import score_rag

        return score_rag(spec, examples, backend, citation_judge)
    prompts = [prompt_for(spec, ex) for ex in examples]
    generations = backend.generate(prompts, spec.max_new_tokens, progress=progress)
    records = []
    if spec.kind in ("mcq", "classification"):
        requests = [(p, c) for p, ex in zip(prompts, examples) for c in continuations(spec, ex)]
        scores = iter(backend.loglikelihood(requests, progress=progress))
        for ex, gen in zip(examples, generations):
            lls = [next(scores) for _ in ex.choices]
            logprob = [s.logprob for s in lls]
            norm = [s.logprob / len(c) for s, c in zip(lls, ex.choices)]
            pred_gen = parse_choice(spec, ex, gen)
            records.append(_record(ex, gen, gold=ex.answer, logprob=[round(x, 6) for x in logprob],
                                   logprob_norm=[round(x, 6) for x in norm],
                                   pred_ll=_argmax(logprob), pred_ll_norm=_argmax(norm), pred_gen=pred_gen))
    else:
        for ex, gen in zip(examples, generations):
            records.append(_record(ex, gen, gold=ex.answer, exact_match=M.exact_match(gen, str(ex.answer)),
                                   token_f1=round(M.token_f1(gen, str(ex.answer)), 6),
                                   rouge_l=round(M.rouge_l(gen, str(ex.answer)), 6)))
    return records


def _record(ex: Example, generation: str, **fields: Any) -> dict[str, Any]:
    return {"id": ex.id, "where": ex.where, "question": ex.question, "choices": ex.choices,
            "generation": generation, **fields}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # ties: the first option, as numpy


def task_metrics(spec: TaskSpec, records: list[dict[str, Any]]) -> dict[str, float]:
    """Aggregate one (model, task)'s records; every value is higher-is-better in [0, 1]."""
    if spec.kind == "rag":
        from kofin.eval.rag import rag_metrics

        out = rag_metrics(spec, records)
    elif spec.kind in ("mcq", "classification"):
        gold = [r["gold"] for r in records]
        # An unparseable generation is a wrong answer (-1 is never a gold index).
        gen = [-1 if r["pred_gen"] is None else r["pred_gen"] for r in records]
        out = {
            "acc": M.accuracy(gold, [r["pred_ll"] for r in records]),
            "acc_norm": M.accuracy(gold, [r["pred_ll_norm"] for r in records]),
            "acc_gen": M.accuracy(gold, gen),
        }
        if spec.kind == "classification":
            out["weighted_f1"] = M.weighted_f1(gold, [r["pred_ll"] for r in records])
            out["weighted_f1_gen"] = M.weighted_f1(gold, gen)
    else:
        out = {
            "exact_match": M.mean([float(r["exact_match"]) for r in records]),
            "token_f1": M.mean([r["token_f1"] for r in records]),
            "rouge_l": M.mean([r["rouge_l"] for r in records]),
        }
    if records and all("bertscore_f1" in r for r in records):  # only when an encoder is configured
        out["bertscore_f1"] = M.mean([r["bertscore_f1"] for r in records])
    return {k: round(v, 6) for k, v in out.items()}
