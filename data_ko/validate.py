"""Validate built rows: schema and role order, PII, duplicates, length in tokens, split, leakage.

Run as:
    kofin data validate runs/data-tiny/sft/train.jsonl [--kind sft|dpo|auto] [--tokenizer PATH]

`validate_rows` is what `kofin data build` applies to every row set before writing it; the
order is schema -> PII scrub -> duplicates -> length -> train/eval split -> leakage check, so
lengths are those of the text actually written and duplicates are judged after masking.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kofin.data_ko.config import ValidateConfig
from kofin.data_ko.dedupe import cross_duplicates, exact_duplicates, near_duplicates
from kofin.data_ko.formats import ROLES, DataInputError
from kofin.data_ko.pii import scrub_pii

MAX_LISTED = 20


# ---------------------------------------------------------------- schema


def check_messages(messages: Any, field_name: str, *, final: str) -> list[str]:
    """Problems of a chat: optional system first, then user/assistant alternating from user,
    the last turn's role being `final`."""
    if not isinstance(messages, list):
        return [f"{field_name}: expected a list of messages, got {type(messages).__name__}"]
    if not messages:
        return [f"{field_name}: empty list"]
    problems = []
    expected = "user"
    for i, msg in enumerate(messages):
        where = f"{field_name}[{i}]"
        if not isinstance(msg, dict):
            problems.append(f"{where}: expected an object with role and content, got {type(msg).__name__}")
            continue
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            problems.append(
                f"{where}.role: {'missing' if role is None else f'unknown role {role!r}'}; "
                f"expected one of {', '.join(ROLES)}"
            )
        elif role == "system":
            if i != 0:
                problems.append(f"{where}.role: a system turn may only come first")
        elif role != expected:
            problems.append(
                f"{where}.role: expected {expected!r} (turns alternate user/assistant, starting with user), "
                f"got {role!r}"
            )
        else:
            expected = "assistant" if role == "user" else "user"
        if not isinstance(content, str):
            problems.append(f"{where}.content: expected a string, got {type(content).__name__}")
        elif not content.strip():
            problems.append(f"{where}.content: empty")
    last = messages[-1].get("role") if isinstance(messages[-1], dict) else None
    if not problems and last != final:
        problems.append(f"{field_name}: the last turn must be {final!r}, got {last!r}")
    return problems


def check_sft_row(row: Any) -> list[str]:
    if not isinstance(row, dict):
        return [f"expected an object, got {type(row).__name__}"]
    if "messages" not in row:
        return ["messages: missing"]
    return check_messages(row["messages"], "messages", final="assistant")


def check_preference_row(row: Any) -> list[str]:
    if not isinstance(row, dict):
        return [f"expected an object, got {type(row).__name__}"]
    problems = [f"{key}: missing" for key in ("prompt", "chosen", "rejected") if key not in row]
    if problems:
        return problems
    problems = check_messages(row["prompt"], "prompt", final="user")
    for key in ("chosen", "rejected"):
        value = row[key]
        if not isinstance(value, list) or not value:
            problems.append(f"{key}: expected a non-empty list of assistant messages")
            continue
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or msg.get("role") != "assistant":
                problems.append(f"{key}[{i}].role: expected 'assistant'")
            elif not isinstance(msg.get("content"), str) or not msg["content"].strip():
                problems.append(f"{key}[{i}].content: expected a non-empty string")
    if not problems and row["chosen"] == row["rejected"]:
        problems.append("rejected: identical to chosen; a pair must differ")
    return problems


CHECKS = {"sft": check_sft_row, "dpo": check_preference_row}


def schema_problems(rows: Sequence[dict], kind: str) -> list[str]:
    out: list[str] = []
    for i, row in enumerate(rows):
        where = row.get("source", f"row {i + 1}") if isinstance(row, dict) else f"row {i + 1}"
        out.extend(f"{where}  {p}" for p in CHECKS[kind](row))
    return out


# ---------------------------------------------------------------- text views of a row


def chat_turns(row: dict, kind: str) -> list[list[dict[str, str]]]:
    """The chats a row trains on: one for SFT, prompt+chosen and prompt+rejected for DPO."""
    if kind == "sft":
        return [row["messages"]]
    return [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]]


def dedupe_text(row: dict, kind: str) -> str:
    """What two rows must share to be duplicates: every non-system turn (the system prompt is
    the same everywhere and would make all rows look alike)."""
    if kind == "raw":
        return row["text"]
    msgs = row["messages"] if kind == "sft" else row["prompt"] + row["chosen"]
    return "\n".join(m["content"] for m in msgs if m["role"] != "system")


def scrub_rows(rows: list[dict], kind: str) -> dict[str, Any]:
    """Mask PII in every message (in place); counts by kind and rows changed."""
    counts: Counter[str] = Counter()
    changed = 0
    for row in rows:
        before = sum(counts.values())
        if kind == "raw":
            row["text"], c = scrub_pii(row["text"])
            counts.update(c)
        else:
            keys = ("messages",) if kind == "sft" else ("prompt", "chosen", "rejected")
            for key in keys:
                for msg in row[key]:
                    msg["content"], c = scrub_pii(msg["content"])
                    counts.update(c)
        changed += sum(counts.values()) > before
    return {"rows_changed": changed, "masked": sum(counts.values()), "by_kind": dict(sorted(counts.items()))}


# ---------------------------------------------------------------- tokens


def load_tokenizer(path: Path | None, *, key: str = "validate.tokenizer", needs_template: bool = True):
    """A transformers tokenizer (with a chat template unless `needs_template` is off); kofin's tiny
    model when `path` is None. Errors name the config `key` that pointed at it."""
    from transformers import AutoTokenizer

    if path is None:
        from kofin.tiny import default_tiny_model

        path = default_tiny_model()
    path = Path(path)
    if not path.exists():
        raise DataInputError(str(path), [f"{key}: {path} does not exist; point it at a local tokenizer folder"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise DataInputError(str(path), [f"{key}: cannot load a tokenizer from {path} ({err})"]) from None
    if needs_template and not tokenizer.chat_template:
        raise DataInputError(str(path), [f"{key}: {path} has no chat template; use a chat model's tokenizer"])
    return tokenizer


def token_lengths(rows: Sequence[dict], kind: str, tokenizer, batch_size: int = 256) -> list[int]:
    """Tokens per row as the trainer sees it (chat template applied); a DPO row counts its longer side."""
    from jinja2 import TemplateError

    texts: list[str] = []
    owners: list[int] = []
    for i, row in enumerate(rows):
        if kind == "raw":
            texts.append(row["text"])
            owners.append(i)
            continue
        for chat in chat_turns(row, kind):
            try:
                texts.append(tokenizer.apply_chat_template(chat, tokenize=False))
            except TemplateError as err:
                raise DataInputError(
                    row.get("source", f"row {i + 1}"), [f"the chat template rejects this row: {err}"]
                ) from None
            owners.append(i)
    lengths = [0] * len(rows)
    for start in range(0, len(texts), batch_size):
        # The template already wrote the special tokens it wants; do not add BOS twice.
        ids = tokenizer(texts[start : start + batch_size], add_special_tokens=kind == "raw")["input_ids"]
        for owner, seq in zip(owners[start : start + batch_size], ids, strict=True):
            lengths[owner] = max(lengths[owner], len(seq))
    return lengths


def length_stats(lengths: Sequence[int], max_seq_len: int) -> dict[str, Any]:
    if not lengths:
        return {"rows": 0, "max_seq_len": max_seq_len, "over_max_seq_len": 0}
    arr = np.asarray(lengths)
    return {
        "rows": int(arr.size),
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 1),
        "p50": int(np.percentile(arr, 50, method="nearest")),
        "p95": int(np.percentile(arr, 95, method="nearest")),
        "max": int(arr.max()),
        "total": int(arr.sum()),
        "max_seq_len": max_seq_len,
        "over_max_seq_len": int((arr > max_seq_len).sum()),
    }


# ---------------------------------------------------------------- split


def _group_order(group: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{group}".encode(), digest_size=8).digest()


def split_by_document(rows: Sequence[dict], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices): whole source documents go to eval, in a seeded hash order,
    while that brings the eval share closer to eval_fraction of the rows."""
    sizes: dict[str, int] = {}
    for row in rows:
        group = source_group(row["source"])
        sizes[group] = sizes.get(group, 0) + 1
    if eval_fraction <= 0 or len(sizes) < 2:
        return list(range(len(rows))), []
    target = eval_fraction * len(rows)
    held: set[str] = set()
    count = 0
    for group in sorted(sizes, key=lambda g: _group_order(g, seed)):
        if abs(count + sizes[group] - target) < abs(count - target) and len(held) + 1 < len(sizes):
            held.add(group)
            count += sizes[group]
    if not held:  # every group is larger than twice the target: still hold out the smallest one
        held.add(min(sizes, key=lambda g: (sizes[g], _group_order(g, seed))))
    train = [i for i, r in enumerate(rows) if source_group(r["source"]) not in held]
    evals = [i for i, r in enumerate(rows) if source_group(r["source"]) in held]
    return train, evals


# ---------------------------------------------------------------- all checks


@dataclass
class Validated:
    train: list[dict]
    eval: list[dict]
    report: dict[str, Any] = field(default_factory=dict)


def _drop(rows: list[dict], indices: set[int]) -> list[dict]:
    return [r for i, r in enumerate(rows) if i not in indices]


def remove_duplicates(rows: list[dict], kind: str, cfg: ValidateConfig) -> tuple[list[dict], dict[str, Any]]:
    report: dict[str, Any] = {"mode": cfg.dedupe, "exact": 0, "near": 0, "examples": []}
    if cfg.dedupe == "none":
        return rows, report
    for mode in ("exact", "near") if cfg.dedupe == "near" else ("exact",):
        texts = [dedupe_text(r, kind) for r in rows]
        if mode == "exact":
            pairs = exact_duplicates(texts)
        else:
            pairs = near_duplicates(texts, cfg.near_dup_threshold, cfg.minhash_permutations, cfg.seed)
        report[mode] = len(pairs)
        report["examples"] += [
            {"removed": rows[i].get("source"), "duplicate_of": rows[j].get("source"), "match": mode} for i, j in pairs
        ][: MAX_LISTED - len(report["examples"])]
        rows = _drop(rows, {i for i, _ in pairs})
    return rows, report


def enforce_length(rows: list[dict], kind: str, cfg: ValidateConfig, tokenizer) -> tuple[list[dict], dict[str, Any]]:
    lengths = token_lengths(rows, kind, tokenizer)
    stats = length_stats(lengths, cfg.max_seq_len)
    too_long = [i for i, n in enumerate(lengths) if n > cfg.max_seq_len]
    listed = [f"{rows[i].get('source', f'row {i + 1}')} ({lengths[i]} tokens)" for i in too_long[:MAX_LISTED]]
    if too_long and cfg.too_long == "error":
        raise DataInputError(
            f"{kind} rows",
            [
                f"{len(too_long)} rows exceed validate.max_seq_len={cfg.max_seq_len} tokens: "
                "raise validate.max_seq_len, shorten them, or set validate.too_long=drop"
            ]
            + listed,
        )
    stats["dropped"] = len(too_long)
    stats["dropped_rows"] = listed
    return _drop(rows, set(too_long)), stats


def source_group(source: str) -> str:
    """The document a row belongs to: `kb:deposit/x#3` -> `kb:deposit/x`; other sources are their own group."""
    head, sep, tail = source.rpartition("#")
    return head if sep and tail.isdigit() else source


def check_schema(rows: Sequence[dict], kind: str, source: str) -> None:
    """Raise one DataInputError listing the malformed rows of `source` (up to MAX_LISTED)."""
    problems = schema_problems(rows, kind)
    if problems:
        raise DataInputError(source, problems[:MAX_LISTED], truncated=len(problems) > MAX_LISTED)


def validate_rows(rows: list[dict], kind: str, cfg: ValidateConfig, tokenizer) -> Validated:
    """Check, clean and split `rows` of `kind` (sft or dpo); raise DataInputError on bad rows."""
    report: dict[str, Any] = {"rows_in": len(rows)}
    check_schema(rows, kind, f"{kind} rows")
    report["pii"] = scrub_rows(rows, kind) if cfg.scrub_pii else {"skipped": True}
    rows, report["duplicates"] = remove_duplicates(rows, kind, cfg)
    rows, report["tokens"] = enforce_length(rows, kind, cfg, tokenizer)
    train_idx, eval_idx = split_by_document(rows, cfg.eval_fraction, cfg.seed)
    train, evals = [rows[i] for i in train_idx], [rows[i] for i in eval_idx]
    leaks = cross_duplicates(
        [dedupe_text(r, kind) for r in evals],
        [dedupe_text(r, kind) for r in train],
        cfg.near_dup_threshold,
        cfg.minhash_permutations,
        cfg.seed,
    )
    report["leakage"] = {
        "removed_from_eval": len(leaks),
        "examples": [{"eval": evals[i].get("source"), "train": train[j].get("source")} for i, j in leaks[:MAX_LISTED]],
    }
    evals = _drop(evals, {i for i, _ in leaks})
    report["split"] = {
        "train": len(train),
        "eval": len(evals),
        "train_documents": len({source_group(r["source"]) for r in train}),
        "eval_documents": len({source_group(r["source"]) for r in evals}),
    }
    return Validated(train, evals, report)


def validate_raw_text(rows: list[dict], cfg: ValidateConfig, tokenizer) -> tuple[list[dict], dict[str, Any]]:
    """Completion rows: PII scrub and exact duplicates only. Long rows are kept: trainers cut
    completion text into max_seq_len chunks, so length is reported, not enforced."""
    report: dict[str, Any] = {"rows_in": len(rows)}
    report["pii"] = scrub_rows(rows, "raw") if cfg.scrub_pii else {"skipped": True}
    dup = {i for i, _ in exact_duplicates([r["text"] for r in rows])} if cfg.dedupe != "none" else set()
    rows = _drop(rows, dup)
    report["duplicates"] = {"exact": len(dup)}
    report["tokens"] = length_stats(token_lengths(rows, "raw", tokenizer), cfg.max_seq_len)
    report["rows_out"] = len(rows)
    return rows, report


# ---------------------------------------------------------------- an existing file


def validate_file(
    path: Path,
    kind: str = "auto",
    tokenizer_path: Path | None = None,
    max_seq_len: int = 2048,
    *,
    count_tokens: bool = True,
    near_threshold: float = 0.85,
) -> dict[str, Any]:
    """Report on a JSONL of SFT or DPO rows (kofin's output, or any format kofin reads)."""
    from kofin.data_ko.formats import RowError, normalize_instruction, normalize_preference, read_records

    records = list(read_records(path))
    if kind == "auto":
        first = records[0][1] if records else {}
        kind = "dpo" if isinstance(first, dict) and "chosen" in first else "sft"
    valid: list[dict] = []
    errors: list[str] = []
    for where, raw in records:
        row: dict[str, Any]
        try:
            if kind == "sft":
                row = {"messages": normalize_instruction(raw)}
            else:
                row = dict(normalize_preference(raw))
        except RowError as err:
            errors.append(f"{where}  {err}")
            continue
        row["source"] = where
        problems = CHECKS[kind](row)
        errors += [f"{where}  {p}" for p in problems]
        if not problems:
            valid.append(row)
    report: dict[str, Any] = {
        "file": str(path),
        "kind": kind,
        "rows": len(records),
        "valid_rows": len(valid),
        "schema_error_count": len(errors),
        "schema_errors": errors[:50],
    }
    texts = [dedupe_text(r, kind) for r in valid]
    report["duplicates"] = {
        "exact": len(exact_duplicates(texts)),
        "near": len(near_duplicates(texts, near_threshold)),
        "threshold": near_threshold,
    }
    report["pii"] = scrub_rows(valid, kind)  # counts only: the scrubbed copies are not written
    if count_tokens and valid:
        tokenizer = load_tokenizer(tokenizer_path)
        lengths = token_lengths(valid, kind, tokenizer)
        report["tokenizer"] = str(tokenizer_path or "kofin tiny model")
        report["tokens"] = length_stats(lengths, max_seq_len)
        report["too_long_rows"] = [
            f"{r['source']} ({n} tokens)" for r, n in zip(valid, lengths, strict=True) if n > max_seq_len
        ][:MAX_LISTED]
    return report
