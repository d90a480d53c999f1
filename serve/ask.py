"""`kofin ask`: answer questions from a knowledge base, with verified citations, as a user.

Run as:
    kofin ask --kb runs/kb-demo "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?"
    kofin ask --kb runs/kb-demo --user kim --users users.yaml --json --top-k 5 "질문"
    kofin ask --kb runs/kb-laws --questions questions.jsonl --out answers.jsonl
    kofin ask --kb KB --backend transformers --model-path runs/merge-demo/model "질문"

One process answers one question or a whole file (`qid`, `question` per line -> one JSON result
per line). Every answer goes through the same steps: retrieve with the user's groups, check
relevance, answer (extractive, or generate from the numbered sources), verify citations, and
append a PII-masked, hash-chained line to the audit log. The chat (serve/app.py) streams the same
steps through `Assistant.stream` with the logged-in user's groups.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import yaml
from pydantic import Field

from kofin.config import ResolvedPath
from kofin.data_ko.corpus import read_utf8
from kofin.data_ko.korean import clean_text
from kofin.errors import KofinError
from kofin.rundir import atomic_write_text
from kofin.serve.audit import audit_record, check_appendable, default_audit_log, install_log_masking, write_audit
from kofin.serve.backends import make_backend
from kofin.serve.conflicts import read_conflicts
from kofin.serve.respond import AskResult, answer_stream
from kofin.serve.retrieve import HybridRetriever
from kofin.serve.settings import AnswerSettings


class AskConfig(AnswerSettings):
    kb: ResolvedPath = Field(description="Knowledge-base folder written by `kofin ingest`.")
    users_file: ResolvedPath | None = Field(
        None,
        description="YAML mapping user -> access groups (`kim: [branch, credit]`), "
        "or the chat's users file (`users:` list with name and groups); needed for --user.",
    )
    audit_log: ResolvedPath | None = Field(
        None,
        description="Hash-chained audit log (question PII-masked, answer as sha256); "
        "`kofin audit verify` checks it. Default: $KOFIN_HOME/logs/ask.jsonl.",
    )


def load_users(path: Path | None) -> dict[str, tuple[str, ...]]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(read_utf8(path)) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KofinError(f"users_file {path}: cannot read it ({err})") from None
    users = data.get("users", data) if isinstance(data, dict) else None
    if isinstance(data, list):
        users = data
    if isinstance(users, list) and all(isinstance(u, dict) and "name" in u for u in users):
        users = {u["name"]: u.get("groups") or [] for u in users}  # the chat's users file (serve/users.py)
    if isinstance(users, dict):
        users = {u: [g] if isinstance(g, str) else g for u, g in users.items()}  # `groups: branch` is one group
    if not isinstance(users, dict) or not all(isinstance(g, list) for g in users.values()):
        raise KofinError(
            f"users_file {path}: not a users file; accepted formats: a mapping of user to groups "
            "(`kim: [branch, credit]`), or the chat's users file (`users:` list of `- name: kim` with `groups: [...]`)"
        )
    return {str(u): tuple(str(g) for g in gs) for u, gs in users.items()}


class Assistant:
    """A loaded KB, retriever and backend; `ask` answers one question for one user, `stream` as it goes."""

    def __init__(self, cfg: AskConfig):
        from kofin.serve.kb import load_kb

        install_log_masking()
        self.cfg = cfg
        self.retriever = HybridRetriever(load_kb(cfg.kb), cfg.retrieval)
        self.conflicts = read_conflicts(cfg.kb)
        self.backend = make_backend(cfg.generation)
        self.users = load_users(cfg.users_file)
        self.audit_log = cfg.audit_log or default_audit_log()
        self._swap = threading.Lock()

    def reload_kb(self) -> None:
        """Load the KB again (after an ingest); questions in flight finish on the one they started with."""
        from kofin.serve.kb import load_kb

        retriever = HybridRetriever(load_kb(self.cfg.kb), self.cfg.retrieval)
        conflicts = read_conflicts(self.cfg.kb)
        with self._swap:
            self.retriever, self.conflicts = retriever, conflicts

    def groups_of(self, user: str | None) -> tuple[str, ...]:
        if user is None:
            return ("all",)  # anonymous: documents open to everyone only
        if user not in self.users:
            where = self.cfg.users_file or "no users_file was given (--users FILE)"
            raise KofinError(f"unknown user '{user}' ({where}); add `{user}: [group, ...]` to the users file")
        return self.users[user] + ("all",)

    def ask(
        self,
        question: str,
        user: str | None = None,
        top_k: int | None = None,
        on_token: Callable[[str], None] | None = None,
        qid: str | None = None,
        history: list[dict] | None = None,
    ) -> AskResult:
        for _, value in self.stream(question, user, top_k=top_k, qid=qid, history=history):
            if isinstance(value, AskResult):  # ("done", result)
                return value
            if on_token and self.backend is not None:  # ("delta", text)
                on_token(value)
        raise AssertionError("Assistant.stream ended without a result")  # stream always ends with "done"

    def stream(
        self,
        question: str,
        user: str | None = None,
        groups: tuple[str, ...] | None = None,
        top_k: int | None = None,
        qid: str | None = None,
        channel: str = "ask",
        history: list[dict] | None = None,
    ) -> Generator[tuple[str, str | AskResult], None, None]:
        """("delta", text) pieces of the raw answer as they come, then ("done", AskResult) once verified.

        `groups` (the chat passes the logged-in user's) replaces the users-file lookup; access
        control is applied in retrieval, before anything is ranked. `history` is the conversation
        so far (OpenAI chat messages); it can rewrite the query, never widen the groups.
        """
        groups = tuple(groups) + ("all",) if groups is not None else self.groups_of(user)
        check_appendable(self.audit_log)  # no answer that the audit log could not record
        with self._swap:
            retriever, conflicts = self.retriever, self.conflicts
        started, retrieved, pieces = time.time(), None, []
        steps = answer_stream(
            retriever,
            self.cfg,
            question,
            groups,
            backend=self.backend,
            history=history,
            top_k=top_k,
            conflicts=conflicts,
        )
        backend = self.cfg.generation.backend
        common = dict(qid=qid, channel=channel, groups=list(groups))  # audit_record's extra fields
        try:
            for kind, value in steps:
                if kind == "retrieved":
                    retrieved = value
                elif kind == "delta":
                    pieces.append(value)
                    yield "delta", value
                else:
                    result = value
        except GeneratorExit:
            # The client went away (closed the page, or Gradio's cancel) after part of the
            # answer was sent: what was sent is still logged, marked as cut short.
            steps.close()
            write_audit(
                self.audit_log,
                audit_record(
                    user=user,
                    backend=backend,
                    question=clean_text(question),
                    answer="".join(pieces),
                    cited=[],
                    found=False,
                    aborted=True,
                    retrieved=[h.chunk["chunk_id"] for h in retrieved.hits] if retrieved else [],
                    rewritten_query=retrieved.query
                    if retrieved and retrieved.query != clean_text(question).strip()
                    else None,
                    seconds=round(time.time() - started, 3),
                    **common,
                ),
            )
            raise
        result.user, result.qid = user, qid
        hits = retrieved.hits if retrieved else []
        write_audit(
            self.audit_log,
            audit_record(
                user=user,
                backend=backend,
                question=result.question,
                answer=result.answer,
                retrieved=[h.chunk["chunk_id"] for h in hits],
                cited=[hits[n - 1].chunk["chunk_id"] for n in result.cited],
                found=result.found,
                rewritten_query=result.rewritten_query,
                removed_citations=result.removed_citations,
                flagged=result.flagged,
                seconds=result.seconds,
                **common,
            ),
        )
        yield "done", result


def read_questions(path: Path) -> list[dict]:
    """`qid`, `question` and, for a follow-up, `history` (earlier messages, OpenAI chat format) per line."""
    from kofin.data_ko.formats import read_records  # same JSONL reading (and errors) as kofin data

    rows = []
    for where, row in read_records(Path(path)):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise KofinError(
                f'{where}: each line needs a non-empty "question" (and a "qid"), '
                'e.g. {"qid": "q1", "question": "..."}'
            )
        history = row.get("history") or []
        if not isinstance(history, list) or not all(
            isinstance(m, dict)
            and m.get("role") in ("user", "assistant", "system")
            and isinstance(m.get("content"), str)
            for m in history
        ):
            raise KofinError(
                f'{where}: "history" must be a list of messages like {{"role": "user", "content": "..."}} '
                "(roles user, assistant; assistant turns optional)"
            )
        rows.append({"qid": clean_text(str(row.get("qid", where))), "question": row["question"], "history": history})
    return rows


def answer_file(
    assistant: Assistant, questions: Path, out: Path, user: str | None = None, top_k: int | None = None
) -> int:
    """Answer every question of a JSONL file into `out` (written atomically); returns the count."""
    rows = read_questions(questions)
    lines = [
        json.dumps(
            assistant.ask(r["question"], user, top_k, qid=r["qid"], history=r["history"]).to_json(), ensure_ascii=False
        )
        for r in rows
    ]
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return len(lines)
