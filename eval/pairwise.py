"""The pairwise preference task (`kind: pairwise`): models answer open-ended Korean prompts, a judge
compares each answer with the baseline model's, twice with positions swapped.

Run as: a library; `kofin.eval.scoring` generates each model's answers (`answer_prompts`), and
`kofin.eval.run` judges every model against the baseline once all have answered
(`judge_against_baseline`). Scores: `kofin.eval.preference`.

Prompt files (`format:`): `pairwise_prompts` (kofin's own JSONL: `id`, `category`, `turns` — the
user turns, several for a multi-turn prompt — and `references`, reference answers the judge sees),
`komt_bench` (KoMT-Bench / MT-Bench `question.jsonl`: `question_id`, `category`, `turns`,
`reference`) and `logickor` (LogicKor: `id`, `category`, `questions`, `references`), read by path.

The judge is a local transformers model or an OpenAI-compatible endpoint (`pairwise_judge`),
asked in Korean (`JUDGE_TEMPLATE`, stored in metrics.json with the run) for an Arena-Hard
verdict. Each game's raw output is kept in the model's record; a record is judged again only
when the judge, the template, or either answer changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from kofin.eval.preference import combine_games, parse_arena_verdict
from kofin.eval.tasks import Example, TaskSpec

JUDGE_TEMPLATE = """당신은 공정한 심사위원입니다. 아래 사용자 질문에 대한 두 AI 어시스턴트의 답변을 비교하세요.
정확성, 금융 실무에서의 유용성, 근거의 명확성, 한국어 표현을 기준으로 판단하고, 답변의 길이나 순서에 영향을 받지 마세요.
참고 답변이 있으면 사실 확인에 사용하세요.
판단을 아래 형식 중 하나로만 출력하세요:
[[A>>B]] (A가 훨씬 낫다), [[A>B]] (A가 낫다), [[A=B]] (비슷하다), [[B>A]] (B가 낫다), [[B>>A]] (B가 훨씬 낫다)

{conversation}{reference}[어시스턴트 A의 답변 시작]
{answer_a}
[어시스턴트 A의 답변 끝]

[어시스턴트 B의 답변 시작]
{answer_b}
[어시스턴트 B의 답변 끝]

판정:"""
TEMPLATE_ID = hashlib.sha256(JUDGE_TEMPLATE.encode()).hexdigest()[:12]


def _turns(row: dict, *keys: str) -> list[str]:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return [value]
        if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
            return value
    raise ValueError(f"needs a non-empty list of user turns under {' or '.join(keys)}")


def prompt_example(row: dict, where: str, format: str) -> Example:
    """One prompt row of any of the three layouts as an Example (meta: turns, references, category)."""
    if not isinstance(row, dict):
        raise ValueError("a prompt row must be a JSON object")
    if format == "komt_bench":
        turns, refs, rid = _turns(row, "turns"), row.get("reference") or [], row.get("question_id")
    elif format == "logickor":
        turns, refs, rid = _turns(row, "questions"), row.get("references") or [], row.get("id")
    else:
        turns, refs, rid = _turns(row, "turns"), row.get("references") or [], row.get("id")
    refs = [r for r in (refs if isinstance(refs, list) else [refs]) if isinstance(r, str)]
    return Example(
        id=str(rid if rid is not None else where),
        where=where,
        question=turns[0],
        answer=" / ".join(refs),
        meta={"turns": turns, "references": refs, "category": str(row.get("category") or "")},
    )


def _chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # A base model or a completions endpoint reads the conversation as plain text.
    return "".join(f"{'질문' if m['role'] == 'user' else '답변'}: {m['content']}\n" for m in messages) + "답변:"


def answer_prompts(spec: TaskSpec, examples: list[Example], backend: Any) -> list[dict[str, Any]]:
    """Each model's answers, turn by turn (a later turn sees the model's own earlier answers), greedy."""
    histories: list[list[dict[str, str]]] = [[] for _ in examples]
    answers: list[list[str]] = [[] for _ in examples]
    tokenizer = getattr(backend, "tokenizer", None)
    for turn in range(max(len(ex.meta["turns"]) for ex in examples)):
        live = [i for i, ex in enumerate(examples) if turn < len(ex.meta["turns"])]
        for i in live:
            histories[i].append({"role": "user", "content": examples[i].meta["turns"][turn]})
        outs = backend.generate([_chat(tokenizer, histories[i]) for i in live], spec.max_new_tokens, stop=())
        for i, out in zip(live, outs, strict=True):
            text = out.strip()
            histories[i].append({"role": "assistant", "content": text})
            answers[i].append(text)
    return [
        {
            "id": ex.id,
            "where": ex.where,
            "question": ex.question,
            "choices": [],
            "gold": ex.answer,
            "turns": ex.meta["turns"],
            "answers": a,
            "generation": a[-1] if a else "",
            "answer_chars": sum(map(len, a)),
        }
        for ex, a in zip(examples, answers, strict=True)
    ]


def judge_prompt(record: dict, answer_a: list[str], answer_b: list[str]) -> str:
    turns = record["turns"]
    conversation = "".join(f"[사용자 질문 {i + 1}]\n{t}\n\n" for i, t in enumerate(turns))
    refs = record.get("gold") or ""
    reference = f"[참고 답변]\n{refs}\n\n" if refs else ""

    def join(answers: list[str]) -> str:
        return "\n\n".join(f"({i + 1}번째 턴) {a}" if len(answers) > 1 else a for i, a in enumerate(answers))

    return JUDGE_TEMPLATE.format(
        conversation=conversation, reference=reference, answer_a=join(answer_a), answer_b=join(answer_b)
    )


def judgement_key(judge_name: str, mine: dict, base: dict) -> str:
    blob = json.dumps([judge_name, TEMPLATE_ID, mine["turns"], mine["answers"], base["answers"]], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


SELF = {"score": 0.5, "flipped": False, "unparsed": 0, "length_diff": 0, "games": [], "baseline": True}


def judge_against_baseline(
    records: list[dict], base: list[dict], judge: Any, judge_name: str, max_new_tokens: int
) -> int:
    """Fill each record's `judgement` (two games, positions swapped); returns how many prompts were judged."""
    if len(records) != len(base) or any(r["id"] != b["id"] for r, b in zip(records, base, strict=True)):
        raise ValueError("the model and the baseline answered different prompts; score both on the same task file")
    todo = [
        i
        for i, (r, b) in enumerate(zip(records, base, strict=True))
        if (r.get("judgement") or {}).get("key") != judgement_key(judge_name, r, b)
    ]
    if not todo:
        return 0
    prompts = []
    for i in todo:
        prompts.append(_judge_text(judge, judge_prompt(records[i], records[i]["answers"], base[i]["answers"])))
        prompts.append(_judge_text(judge, judge_prompt(records[i], base[i]["answers"], records[i]["answers"])))
    outputs = judge.generate(prompts, max_new_tokens, stop=())
    for n, i in enumerate(todo):
        first, swapped = outputs[2 * n], outputs[2 * n + 1]
        v1, v2 = parse_arena_verdict(first), parse_arena_verdict(swapped)
        score, flipped = combine_games(v1, v2)
        records[i]["judgement"] = {
            "key": judgement_key(judge_name, records[i], base[i]),
            "score": score,
            "flipped": flipped,
            "unparsed": (v1 is None) + (v2 is None),
            "length_diff": records[i]["answer_chars"] - base[i]["answer_chars"],
            "games": [{"model_is": "A", "verdict": v1, "raw": first}, {"model_is": "B", "verdict": v2, "raw": swapped}],
        }
    return len(todo)


def _judge_text(judge: Any, text: str) -> str:
    return _chat(getattr(judge, "tokenizer", None), [{"role": "user", "content": text}])


def mark_baseline(records: Sequence[dict]) -> None:
    """The baseline against itself is a tie by definition: no judge call, outcome 0.5."""
    for r in records:
        r["judgement"] = dict(SELF)
