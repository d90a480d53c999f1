"""SFT rows: reading-comprehension chats over documents, plus user instruction files.

Run as:
    kofin data build-sft --config configs/data/tiny.yaml

Every row is `{"messages": [...], "source": ..., "task": ...}`. `source` says where the row came
from and groups the train/eval split: `kb:deposit/deposit-faq#3` is passage 3 of a knowledge-base
document (all passages of one document share the group `kb:deposit/deposit-faq`), and
`instructions_alpaca.jsonl:7` is line 7 of a user file (each row its own group).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from kofin.data_ko.config import BuildSftConfig, DocumentSource, ReadingComprehensionConfig
from kofin.data_ko.corpus import iter_documents
from kofin.data_ko.formats import read_instructions
from kofin.data_ko.reading_comprehension import Passage, TermStats, extract_passages, mine_tasks, passage_chat
from kofin.data_ko.validate import check_schema, source_group  # noqa: F401 - source_group re-exported


@dataclass
class SftBuild:
    rows: list[dict[str, Any]]
    raw_text: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def passage_source(label: str, passage: Passage) -> str:
    return f"{label}:{passage.doc_id}#{passage.index}"


def with_system(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    if system_prompt and messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}] + messages
    return messages


def document_passages(
    source: DocumentSource, min_chars: int, max_chars: int, max_passages: int | None = None
) -> list[Passage]:
    documents = itertools.islice(iter_documents(source.path), source.max_documents)
    passages = [p for doc in documents for p in extract_passages(doc, min_chars, max_chars)]
    return passages[:max_passages] if max_passages else passages


def passage_text_row(label: str, passage: Passage) -> dict[str, Any]:
    """A completion-format row for continued pretraining: where the passage sits, then the passage."""
    where = passage.doc_title if passage.heading == passage.doc_title else f"{passage.doc_title} — {passage.heading}"
    return {"text": f"{where}\n\n{passage.text}", "source": passage_source(label, passage)}


def reading_comprehension_rows(
    source: DocumentSource, rc: ReadingComprehensionConfig, system_prompt: str | None, *, progress: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(chat rows, raw-text rows, passages without any task) for one document source."""
    passages = document_passages(source, rc.min_passage_chars, rc.max_passage_chars, rc.max_passages)
    # Keyword IDF comes from every passage of the source, so keywords are what sets a
    # passage apart from the rest of its corpus.
    stats = TermStats(passages)
    rows, raw, skipped = [], [], 0
    for passage in tqdm(
        passages,
        desc=f"reading comprehension ({source.label})",
        unit="passage",
        disable=None if progress else True,
        leave=False,
    ):
        tasks = mine_tasks(passage, stats, rc.tasks, rc.max_qa_per_passage, rc.num_keywords)
        raw.append(passage_text_row(source.label, passage))
        if not tasks:
            skipped += 1
            continue
        src = passage_source(source.label, passage)
        rows.append(
            {
                "messages": with_system(passage_chat(passage, tasks, src), system_prompt),
                "source": src,
                "task": "reading_comprehension",
                "rc_tasks": [t.kind for t in tasks],
            }
        )
    return rows, raw, skipped


def build_sft_rows(cfg: BuildSftConfig, *, progress: bool = False) -> SftBuild:
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"documents": {}, "instructions": {}}
    for source in cfg.documents:
        rc_rows, raw_rows, skipped = reading_comprehension_rows(
            source, cfg.reading_comprehension, cfg.system_prompt, progress=progress
        )
        rows += rc_rows
        raw += raw_rows
        stats["documents"][source.label] = {
            "passages": len(raw_rows),
            "chats": len(rc_rows),
            "passages_without_tasks": skipped,
        }
    for inst in cfg.instructions:
        examples = read_instructions(inst.path, inst.format, inst.split)
        # Check the user's rows as written, before a system turn shifts their message indices.
        check_schema(examples, "sft", str(inst.path))
        for row in examples:
            row["messages"] = with_system(row["messages"], cfg.system_prompt)
            row["task"] = "instruction"
        rows += examples
        stats["instructions"][inst.path.name] = len(examples)
    return SftBuild(rows=rows, raw_text=raw, stats=stats)
