"""The audit log: one PII-masked, hash-chained JSON line per answered question.

Run as:
    kofin audit verify runs/serve-demo/audit.jsonl     (exit 0 intact, 1 tampered, with the line)

`kofin ask` and the chat append through `write_audit`; kofin's `logging` records go through
`PiiMaskingFilter`. Bank staff paste customers' resident numbers, phones, cards and accounts into
questions; none of that may reach a log, so the question is masked with kofin.data_ko.pii (the
same scrubber as the training data) and the answer is stored only as its sha256.

Tamper evidence: every line carries `seq`, `prev` (the previous line's `hash`; 64 zeros on the
first line) and `hash` = sha256 of the line's canonical JSON without `hash`. Editing a line breaks
its own hash, deleting or reordering lines breaks `seq`/`prev`, a torn last line is not JSON. A
sidecar `<log>.head` holds the count and hash of the last line, so cutting whole lines off the end
is caught too. A log from before the chain (no `.head`) is renamed `<log>.pre-chain-<time>` on the
first write and a new chain starts. The chain makes tampering evident, not impossible: someone who can rewrite the
whole file and its head can forge a consistent chain, so ship `verify`'s head hash to a store the
server cannot rewrite (syslog, WORM) when that matters.

Appends hold an exclusive `fcntl` lock on the log, so concurrent sessions and processes never
interleave lines or fork the chain. Before appending, the log's last line is checked against
`.head`: a log cut short (or emptied, or deleted) while its head says otherwise, or chained lines
with no head, is tampering, and the append is refused (`AuditTampered`, logged at CRITICAL on
`kofin.audit`) instead of chaining onto the cut log, which would re-seal it with the shorter history.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from kofin.data_ko.pii import scrub_pii
from kofin.errors import KofinError

GENESIS = "0" * 64
alarm = logging.getLogger("kofin.audit")
_thread_lock = threading.Lock()  # flock is per open file; this orders threads of one process too


def mask(text: str) -> str:
    """What reaches a log: kofin.data_ko.pii's log mode (the same function that scrubs training
    data, stricter: any 13-19 digit run, e-mail addresses and passports too; NFKC, invisible
    characters dropped, dashes, dots and spaces read as separators)."""
    return scrub_pii(text, log=True)[0]


class PiiMaskingFilter(logging.Filter):
    """Masks PII in a record's message (arguments included) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = mask(message), None
        return True


def install_log_masking(logger_name: str = "kofin") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, PiiMaskingFilter) for f in logger.filters):
        logger.addFilter(PiiMaskingFilter())
    for handler in logging.getLogger().handlers:  # handlers see records of every logger
        if not any(isinstance(f, PiiMaskingFilter) for f in handler.filters):
            handler.addFilter(PiiMaskingFilter())


def default_audit_log() -> Path:
    home = Path(os.environ.get("KOFIN_HOME") or Path.home() / ".cache" / "kofin")
    return home / "logs" / "ask.jsonl"


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def line_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def answer_sha256(answer: str) -> str:
    return hashlib.sha256(answer.encode("utf-8")).hexdigest()


def audit_record(
    *, user: str | None, question: str, answer: str, retrieved: list[str], cited: list[str], backend: str, **extra: Any
) -> dict[str, Any]:
    """The fields every audit line has; `extra` (qid, groups, found, flagged, seconds...) is kept."""
    return {
        "user": user,
        "question": question,
        "retrieved": retrieved,
        "cited": cited,
        "answer_sha256": answer_sha256(answer),
        "backend": backend,
        **extra,
    }


def _masked(record: dict[str, Any]) -> dict[str, Any]:
    clean = dict(record)
    for key in ("question", "rewritten_query"):  # a rewritten follow-up carries the earlier turns' words
        if isinstance(clean.get(key), str):
            clean[key] = mask(clean[key])
    if clean.get("flagged"):
        clean["flagged"] = [dict(f, sentence=mask(f["sentence"])) for f in clean["flagged"]]
    clean.pop("answer", None)  # only its hash is kept (answer_sha256)
    return clean


def _last_line(f) -> bytes:
    """The file's last complete line (the log's tail, read backwards; the log can be large)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    block, data = 8192, b""
    pos = end
    while pos > 0:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
        if data.rstrip(b"\n").count(b"\n") >= 1:
            break
    lines = data.rstrip(b"\n").split(b"\n")
    return lines[-1] if lines and lines[-1] else b""


# Audit chains kept somewhere else than the file at their configured path (kofin serve with a
# PostgreSQL store routes its audit_log there, so `kofin ask`'s and the chat's writes both land in it).
_ROUTES: dict[Path, Any] = {}


def route_audit(path: Path, sink) -> None:
    """Send every `write_audit(path, ...)` of this process to `sink.append(clean_record)`."""
    _ROUTES[Path(path).resolve()] = sink


def write_audit(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append one masked, chained line (see the module docstring); returns the line as written."""
    path = Path(path)
    clean = _masked(record)
    clean["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sink = _ROUTES.get(path.resolve()) if _ROUTES else None
    if sink is not None:
        return sink.append(clean)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _thread_lock:
        for _ in range(2):
            with open(path, "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    if _pre_chain(f) and not _head_path(path).exists():
                        # A log written before the chain existed (no .head ever written beside it):
                        # kept under another name, and a new chain starts. A chained log whose first
                        # line lost its fields is not moved aside: `verify` must name that line.
                        os.replace(path, path.with_name(f"{path.name}.pre-chain-{int(time.time())}"))
                        continue
                    _append(f, path, clean)
                    return clean
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
    raise OSError(f"{path}: could not append to the audit log")  # only if it keeps being replaced under us


def check_appendable(path: Path) -> None:
    """Raise AuditTampered now if the next append would be refused: the chat calls this before it
    answers, so no answer is shown that the audit log could not record."""
    path = Path(path)
    sink = _ROUTES.get(path.resolve()) if _ROUTES else None
    if sink is not None:
        return sink.check()
    if not path.exists() and not _head_path(path).exists():
        return
    with _thread_lock, open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            if not (_pre_chain(f) and not _head_path(path).exists()):
                _chain_tail(f, path)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _pre_chain(f) -> bool:
    f.seek(0)
    first = f.readline()
    try:
        row = json.loads(first) if first.strip() else None
    except ValueError:
        return False
    return isinstance(row, dict) and "seq" not in row and "hash" not in row


class AuditTampered(KofinError):
    """The log does not end where its head says: appending would hide the cut."""


def refuse_tampered(where: str, problem: str) -> NoReturn:
    message = (
        f"{where}: {problem}; refusing to append (that would re-seal the log with the shorter history). "
        f"Check it with `kofin audit verify {where}`, restore the log from a backup, or move the log and "
        "its .head aside to start a new chain on purpose"
    )
    alarm.critical("AUDIT LOG TAMPERED: %s", message)
    raise AuditTampered(message)


def _append(f, path: Path, clean: dict[str, Any]) -> None:
    prev, seq = _chain_tail(f, path)
    clean.update(seq=seq, prev=prev)
    clean["hash"] = line_hash(clean)
    f.seek(0, os.SEEK_END)
    f.write(canonical(clean) + b"\n")
    f.flush()
    os.fsync(f.fileno())
    _write_head(path, seq, clean["hash"])


def _chain_tail(f, path: Path) -> tuple[str, int]:
    """(hash, seq + 1) of the last line, after checking it is the line the head recorded."""
    last = _last_line(f)
    head_file = _head_path(path)
    if not head_file.exists():
        if last:
            refuse_tampered(str(path), f"the log has lines but {head_file.name} is missing")
        return GENESIS, 1
    head = _read_head(head_file)
    if head is None:
        refuse_tampered(str(path), f"{head_file.name} is not the JSON the writer keeps there")
    if not last:
        refuse_tampered(str(path), f"{head_file.name} says {head.get('lines')} lines but the log is empty or missing")
    try:
        tail = json.loads(last)
        ok = isinstance(tail, dict) and line_hash(tail) == tail.get("hash")
    except ValueError:
        ok = False
    if not ok or tail.get("seq") != head.get("lines") or tail.get("hash") != head.get("hash"):
        seen = f"entry {tail.get('seq')}" if ok else "a line that is not an intact chained entry"
        refuse_tampered(
            str(path),
            f"{head_file.name} says the log ends at entry {head.get('lines')} "
            f"({str(head.get('hash'))[:12]}…) but it ends with {seen} (lines were cut off or edited)",
        )
    return tail["hash"], int(tail["seq"]) + 1


def _read_head(head_file: Path) -> dict | None:
    try:
        head = json.loads(head_file.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    return head if isinstance(head, dict) else None


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _write_head(path: Path, seq: int, digest: str) -> None:
    head = _head_path(path)
    tmp = head.with_name(head.name + ".tmp")
    tmp.write_text(json.dumps({"lines": seq, "hash": digest}) + "\n", encoding="utf-8")
    os.replace(tmp, head)


# ---------------------------------------------------------------- verify


@dataclass
class AuditCheck:
    path: Path | str
    lines: int = 0
    head: str = GENESIS
    bad_line: int | None = None  # 1-based line number of the first problem
    problem: str = ""
    head_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.bad_line is None and not self.problem

    def summary(self) -> str:
        if not self.ok:
            where = f"line {self.bad_line}: " if self.bad_line else ""
            return f"{self.path}: TAMPERED — {where}{self.problem}"
        head = "matches its .head file" if self.head_checked else "no .head file to compare the end against"
        return f"{self.path}: intact — {self.lines} lines, chain head {self.head} ({head})"


def verify_audit(path: Path) -> AuditCheck:
    """Walk the chain; the first line that breaks it is reported with what is wrong."""
    path = Path(path)
    check = AuditCheck(path)
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        n = raw.count(b"\n") + 1
        check.bad_line, check.problem = n, "the last line is cut off (no newline at its end): truncated or torn write"
        return check
    head_file = _head_path(path)
    head: dict | str | None = None
    if head_file.exists():
        head = _read_head(head_file) or "damaged"
    return check_chain(check, raw.split(b"\n")[:-1] if raw else [], head, head_file.name)


def verify_audit_target(target: str) -> AuditCheck:
    """`kofin audit verify` for a file path or a PostgreSQL DSN (the replicas' shared chain)."""
    if target.startswith(("postgresql://", "postgres://")):
        from kofin.serve.store_pg import verify_pg_audit

        return verify_pg_audit(target)
    return verify_audit(Path(target))


def check_chain(check: AuditCheck, lines: list[bytes], head: dict | str | None, head_name: str) -> AuditCheck:
    """Every line's hash, seq and prev, then the head record (None: none kept; "damaged")."""
    prev, expected_seq = GENESIS, 1
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            check.bad_line, check.problem = n, "not a JSON object (edited, or a torn write)"
            return check
        missing = [k for k in ("seq", "prev", "hash") if k not in record]
        if missing:
            check.bad_line, check.problem = n, f"no {', '.join(missing)} field (not a chained audit line)"
            return check
        if line_hash(record) != record["hash"]:
            check.bad_line, check.problem = n, "its hash does not match its content (the line was edited)"
            return check
        if record["prev"] != prev or record["seq"] != expected_seq:
            what = (
                f"it is entry {record['seq']} but entry {expected_seq} should come here"
                if record["seq"] != expected_seq
                else "its prev hash is not the previous line's hash"
            )
            check.bad_line, check.problem = n, f"{what} (a line before it was deleted, or lines were reordered)"
            return check
        prev, expected_seq = record["hash"], expected_seq + 1
        check.lines = n
    check.head = prev
    if head is None:
        if check.lines:
            # Every chained write updates the head; without it, lines cut off the end go unseen.
            check.problem = f"{head_name} is missing: lines may have been cut off the end (the writer always keeps it)"
        return check
    if not isinstance(head, dict):
        check.problem = f"{head_name} is not the JSON the writer keeps there (edited or damaged)"
        return check
    check.head_checked = True
    if head.get("lines") != check.lines or head.get("hash") != prev:
        check.problem = (
            f"{head_name} says {head.get('lines')} lines ending in {str(head.get('hash'))[:12]}…, "
            f"the log has {check.lines} ending in {prev[:12]}… (lines were cut off the end)"
        )
    return check
