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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml
from pydantic import Field

from kofin.config import KofinModel, ResolvedPath
from kofin.data_ko.corpus import read_utf8
from kofin.errors import KofinError
from kofin.rundir import atomic_write_text
from kofin.serve.answer import NO_ANSWER, Source, build_messages, extractive_answer, relevant
from kofin.serve.audit import audit_record, default_audit_log, install_log_masking, write_audit
from kofin.serve.backends import make_backend
from kofin.serve.citations import verify_citations
from kofin.serve.retrieve import HybridRetriever
from kofin.serve.settings import AnswerSettings


class AskConfig(AnswerSettings):
    kb: ResolvedPath = Field(description="Knowledge-base folder written by `kofin ingest`.")
    users_file: ResolvedPath | None = Field(None, description="YAML mapping user -> access groups (`kim: [branch, credit]`), or the chat's users file (`users:` list with name and groups); needed for --user.")
    audit_log: ResolvedPath | None = Field(None, description="Hash-chained audit log (question PII-masked, answer as sha256); `kofin audit verify` checks it. Default: $KOFIN_HOME/logs/ask.jsonl.")


@dataclass
class AskResult:
    question: str
    answer: str
    sources: list[dict]
    cited: list[int] = field(default_factory=list)
    removed_citations: list[int] = field(default_factory=list)
    flagged: list[dict] = field(default_factory=list)
    found: bool = True
    rewritten_query: str | None = None  # the query retrieval ran when a follow-up was rewritten with its history
    caveat: str | None = None  # shown above the answer when the evidence is weak or the sources disagree
    conflicts: list[dict] = field(default_factory=list)  # statements of the sources that disagree
    backend: str = "extractive"
    user: str | None = None
    qid: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not (k == "qid" and v is None)}


def load_users(path: Path | None) -> dict[str, tuple[str, ...]]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(read_utf8(path)) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KofinError(f"users_file {path}: cannot read it ({err})") from None
    users = data.get("users", data) if isinstance(data, dict) else None
    if isinstance(users, list) and all(isinstance(u, dict) and "name" in u for u in users):
        users = {u["name"]: list(u.get("groups") or []) for u in users}  # the chat's users file (serve/users.py)
    if not isinstance(users, dict) or not all(isinstance(g, list) for g in users.values()):
        raise KofinError(f"users_file {path}: expected `user: [group, ...]` lines, e.g. `kim: [branch, credit]`")
    return {str(u): tuple(str(g) for g in gs) for u, gs in users.items()}


class Assistant:
    """A loaded KB, retriever and backend; `ask` answers one question for one user, `stream` as it goes."""

    def __init__(self, cfg: AskConfig):
        from kofin.serve.kb import load_kb

        install_log_masking()
        self.cfg = cfg
        self.retriever = HybridRetriever(load_kb(cfg.kb), cfg.retrieval)
        self.backend = make_backend(cfg.generation)
        self.users = load_users(cfg.users_file)
        self.audit_log = cfg.audit_log or default_audit_log()
        self._swap = threading.Lock()

    def reload_kb(self) -> None:
        """Load the KB again (after an ingest); questions in flight finish on the one they started with."""
        from kofin.serve.kb import load_kb

        retriever = HybridRetriever(load_kb(self.cfg.kb), self.cfg.retrieval)
        with self._swap:
            self.retriever = retriever

    def groups_of(self, user: str | None) -> tuple[str, ...]:
        if user is None:
            return ("all",)  # anonymous: documents open to everyone only
        if user not in self.users:
            where = self.cfg.users_file or "no users_file was given (--users FILE)"
            raise KofinError(f"unknown user '{user}' ({where}); add `{user}: [group, ...]` to the users file")
        return self.users[user] + ("all",)

    def ask(self, question: str, user: str | None = None, top_k: int | None = None, on_token: Callable[[str], None] | None = None, qid: str | None = None) -> AskResult:
        for kind, value in self.stream(question, user, top_k=top_k, qid=qid):
            if kind == "delta" and on_token and self.backend is not None:
                on_token(value)
            elif kind == "done":
                return value
        raise AssertionError("Assistant.stream ended without a result")  # stream always ends with "done"

    def stream(self, question: str, user: str | None = None, groups: tuple[str, ...] | None = None, top_k: int | None = None,
               qid: str | None = None, channel: str = "ask", history: list[dict] | None = None) -> Iterator[tuple[str, object]]:
        """("delta", text) pieces of the raw answer as they come, then ("done", AskResult) once verified.

        `groups` (the chat passes the logged-in user's) replaces the users-file lookup; access
        control is applied in retrieval, before anything is ranked.
        """
        started = time.time()
        groups = tuple(groups) + ("all",) if groups is not None else self.groups_of(user)
        with self._swap:
            retriever = self.retriever
        hits = retriever.search(question, groups, top_k or self.cfg.retrieval.top_k)
        sources = [Source(i, h) for i, h in enumerate(hits, 1)]
        result = AskResult(question, NO_ANSWER, [], backend=self.cfg.generation.backend, user=user, qid=qid)
        if not hits or not relevant(retriever, question, hits, self.cfg.min_coverage):
            result.found = False
        else:
            pieces = []
            if self.backend is None:
                # Extractive answers are ready at once; sent line by line like generated text.
                raw = extractive_answer(retriever, question, sources, self.cfg.max_sentences)
                stream: Iterator[str] = iter(raw.splitlines(keepends=True))
            else:
                stream = self.backend.stream(build_messages(question, sources))
            try:
                for piece in stream:
                    pieces.append(piece)
                    yield "delta", piece
            except GeneratorExit:
                # The client went away (closed the page, or Gradio's cancel) after part of the
                # answer was sent: what was sent is still logged, marked as cut short.
                write_audit(self.audit_log, audit_record(
                    user=user, question=question, answer="".join(pieces), retrieved=[h.chunk["chunk_id"] for h in hits],
                    cited=[], backend=result.backend, qid=qid, channel=channel, groups=list(groups), found=False,
                    aborted=True, seconds=round(time.time() - started, 3),
                ))
                raise
            raw = "".join(pieces)
            check = verify_citations(raw, [s.text for s in sources], self.cfg.min_support)
            result.answer = check.text or NO_ANSWER
            result.cited, result.removed_citations = check.cited, check.removed
            result.flagged = [asdict(f) for f in check.flagged]
            result.found = result.answer != NO_ANSWER
        result.sources = [_source_json(s, s.number in result.cited) for s in sources] if result.found else []
        result.seconds = round(time.time() - started, 3)
        write_audit(self.audit_log, audit_record(
            user=user, question=question, answer=result.answer, retrieved=[h.chunk["chunk_id"] for h in hits],
            cited=[sources[n - 1].hit.chunk["chunk_id"] for n in result.cited], backend=result.backend,
            qid=qid, channel=channel, groups=list(groups), found=result.found, removed_citations=result.removed_citations,
            flagged=result.flagged, seconds=result.seconds,
        ))
        yield "done", result


def _source_json(src: Source, cited: bool) -> dict:
    c = src.hit.chunk
    return {
        "n": src.number, "id": c["doc_id"], "chunk_id": c["chunk_id"], "title": c["title"], "section": c["section"],
        "page": c["page"], "score": round(src.hit.score, 6), "text": c["text"], "cited": cited,
    }


def read_questions(path: Path) -> list[dict]:
    from kofin.data_ko.formats import read_records  # same JSONL reading (and errors) as kofin data

    rows = []
    for where, row in read_records(Path(path)):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise KofinError(f"{where}: each line needs a non-empty \"question\" (and a \"qid\"), e.g. {{\"qid\": \"q1\", \"question\": \"...\"}}")
        rows.append({"qid": str(row.get("qid", where)), "question": row["question"]})
    return rows


def answer_file(assistant: Assistant, questions: Path, out: Path, user: str | None = None, top_k: int | None = None) -> int:
    """Answer every question of a JSONL file into `out` (written atomically); returns the count."""
    rows = read_questions(questions)
    lines = [json.dumps(assistant.ask(r["question"], user, top_k, qid=r["qid"]).to_json(), ensure_ascii=False) for r in rows]
    atomic_write_text(out, "".join(line + "\n" for line in lines))
    return len(lines)
