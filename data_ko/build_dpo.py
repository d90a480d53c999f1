"""Preference rows for DPO: user preference files plus grounded pairs mined from documents.

Run as:
    kofin data build-dpo --config configs/data/tiny.yaml

Rows take TRL's conversational shape:

    {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}],
     "rejected": [{"role": "assistant", ...}], "source": ..., "task": ...}

Grounded pairs (`from_documents`) teach citation behaviour. The prompt gives a passage as
numbered context `[1]` and asks a question mined from it. The chosen answer states the fact the
passage holds and cites `[1]`. The rejected answer is fluent and plausible but not supported by
the context, in one of two ways:

* `changed_number`: the same sentence with one number altered, still citing `[1]`. Staff check
  citations; a claim that points at a source which says something else is the worst failure, so
  the model must learn that a citation is a promise about content, not a decoration.
* `other_passage`: a true fact from a different document, stated without a citation. This
  punishes answering from memory instead of from the given context.

Because one rejected kind carries the citation and the other lacks it, "add [1]" alone does not
win the preference; only answering from the cited passage does.
"""

from __future__ import annotations

import re
from typing import Any

from tqdm import tqdm

from kofin.data_ko.build_sft import document_passages, passage_source, with_system
from kofin.data_ko.config import BuildDpoConfig, DocumentSource, ReadingComprehensionConfig
from kofin.data_ko.formats import read_preferences
from kofin.data_ko.reading_comprehension import NUMBER_WITH_UNIT, Passage, Task, TermStats, mine_tasks
from kofin.data_ko.validate import check_schema

GROUNDED_INSTRUCTION = "다음 자료를 근거로 질문에 답하세요. 답의 근거가 된 자료는 [1]처럼 번호로 표시하세요."
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def citation_label(passage: Passage) -> str:
    if passage.heading == passage.doc_title:
        return passage.doc_title
    return f"{passage.doc_title} — {passage.heading}"


def change_number(text: str) -> str | None:
    """`text` with one quantity altered (a number with a unit if there is one), or None."""
    unit = NUMBER_WITH_UNIT.search(text)
    m = _NUMBER.search(text, unit.start()) if unit else _NUMBER.search(text)
    if not m:
        return None
    raw = m.group()
    digits = raw.replace(",", "")
    if "." in digits:
        decimals = len(digits.split(".")[1])
        new = f"{float(digits) + 1:.{decimals}f}"
    else:
        value = int(digits)
        new = f"{value * 2:,}" if "," in raw else str(value * 2 if value else 1)
    return text[: m.start()] + new + text[m.end() :]


def grounded_prompt(passage: Passage, question: str) -> str:
    return f"{GROUNDED_INSTRUCTION}\n\n[1] {citation_label(passage)}\n{passage.text}\n\n질문: {question}"


def grounded_answer(answer: str, passage: Passage) -> str:
    return f"{answer} [1]\n\n출처: [1] {citation_label(passage)}"


def _facts(source: DocumentSource, max_pairs: int, progress: bool) -> list[tuple[Passage, Task]]:
    rc = ReadingComprehensionConfig()
    passages = document_passages(source, rc.min_passage_chars, rc.max_passage_chars)
    stats = TermStats(passages)
    facts: list[tuple[Passage, Task]] = []
    for passage in tqdm(
        passages,
        desc=f"grounded pairs ({source.label})",
        unit="passage",
        disable=None if progress else True,
        leave=False,
    ):
        qa = mine_tasks(passage, stats, ["qa"], max_pairs, rc.num_keywords)
        facts.extend((passage, task) for task in qa)
    return facts


def grounded_pairs(
    source: DocumentSource, system_prompt: str | None, max_pairs: int, *, progress: bool = False
) -> list[dict[str, Any]]:
    facts = _facts(source, max_pairs, progress)
    rows = []
    for i, (passage, task) in enumerate(facts):
        changed = _changed_claim(task, passage) if i % 2 == 0 else None
        if changed is not None:
            kind, rejected = "changed_number", grounded_answer(changed, passage)
        else:
            other = _other_document_answer(facts, i)
            if other is None:
                continue
            kind, rejected = "other_passage", other
        rows.append(
            {
                "prompt": with_system(
                    [{"role": "user", "content": grounded_prompt(passage, task.question)}], system_prompt
                ),
                "chosen": [{"role": "assistant", "content": grounded_answer(task.answer, passage)}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "source": passage_source(source.label, passage),
                "task": "grounded_citation",
                "rejected_kind": kind,
            }
        )
    return rows


def _changed_claim(task: Task, passage: Passage) -> str | None:
    """The answer with a number of its evidence altered (for a table answer: of the cell, not
    of the row label), provided the altered claim is not also in the passage."""
    changed = change_number(task.evidence)
    if changed is None or changed == task.evidence or changed in passage.text:
        return None
    return task.answer.replace(task.evidence, changed, 1)


def _other_document_answer(facts: list[tuple[Passage, Task]], i: int) -> str | None:
    """The answer of a fact from another document, half the corpus away (deterministic)."""
    passage, task = facts[i]
    n = len(facts)
    for step in range(n // 2, n // 2 + n):
        other_passage, other = facts[(i + step) % n]
        # The rejected answer must really be ungrounded: not a fact this passage also states.
        if (
            other_passage.doc_id != passage.doc_id
            and other.answer != task.answer
            and other.evidence not in passage.text
        ):
            return other.answer
    return None


def build_dpo_rows(cfg: BuildDpoConfig, *, progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"sources": {}, "from_documents": {}}
    for src in cfg.sources:
        pairs = read_preferences(src.path, src.format, src.split)
        # Check the user's rows as written, before a system turn shifts their message indices.
        check_schema(pairs, "dpo", str(src.path))
        for row in pairs:
            row["prompt"] = with_system(row["prompt"], cfg.system_prompt)
            row["task"] = "preference"
        rows += pairs
        stats["sources"][src.path.name] = len(pairs)
    if cfg.from_documents:
        for source in cfg.documents:
            pairs = grounded_pairs(source, cfg.system_prompt, cfg.max_pairs_per_passage, progress=progress)
            rows += pairs
            kinds: dict[str, int] = {}
            for row in pairs:
                kinds[row["rejected_kind"]] = kinds.get(row["rejected_kind"], 0) + 1
            stats["from_documents"][source.label] = {"pairs": len(pairs), "rejected_kinds": dict(sorted(kinds.items()))}
    return rows, stats
