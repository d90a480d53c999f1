"""The chat's shared state in PostgreSQL, for several `kofin serve` replicas behind a load balancer.

Run as: a library; `kofin serve` with `store: {kind: postgresql, dsn: postgresql://...}` opens it.
Verify the chain there with `verify_pg_audit(dsn)` (kofin.serve.audit.verify_audit_target).

The same tables as the file store (kofin.serve.store), plus the audit chain:
`kofin_audit(seq, line, hash)` holds each canonical line exactly as the file chain would, and
`kofin_audit_head` the count and hash of the last one. An append runs in one transaction that
takes a transaction-scoped advisory lock, reads the head and the last line, checks that they agree
(a deleted tail or an edited last line is refused, as in the file chain: never re-sealed), and
inserts the next line: concurrent replicas queue on the lock, so the chain has no forks and no
gaps (`seq` is also the primary key). As with the file, the chain makes tampering evident, not
impossible: a database owner could rewrite every row; ship the head hash to a store the chat
cannot write when that matters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from kofin.serve.audit import GENESIS, AuditCheck, canonical, check_chain, line_hash, refuse_tampered
from kofin.serve.store import SCHEMA, SqlStore

AUDIT_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS kofin_audit (seq BIGINT PRIMARY KEY, line TEXT NOT NULL, hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kofin_audit_head "
    "(id INTEGER PRIMARY KEY CHECK (id = 1), lines BIGINT NOT NULL, hash TEXT NOT NULL)",
    # Admin uploads (name, groups, bytes): every replica's upload folder is a copy of this table.
    """CREATE TABLE IF NOT EXISTS kofin_uploads (name TEXT PRIMARY KEY, access_groups TEXT NOT NULL,
        sha256 TEXT NOT NULL, content BYTEA NOT NULL, uploaded DOUBLE PRECISION NOT NULL)""",
]
# pg_advisory(_xact)_lock keys: the schema (replicas starting together) and the audit chain's head.
SCHEMA_LOCK, AUDIT_LOCK = 0x6B6F66696E01, 0x6B6F66696E02


def _connect(dsn: str):
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10, application_name="kofin serve")
    except psycopg.OperationalError as err:
        from kofin.errors import KofinError

        raise KofinError(
            f"store.dsn {_safe(dsn)}: cannot connect to PostgreSQL ({str(err).strip()}); "
            "check the address, the database and the user, and that the server accepts them"
        ) from None


def _safe(dsn: str) -> str:
    """The DSN without a password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


class PostgresStore(SqlStore):
    kind = "postgresql"

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._lock = (
            threading.Lock()
        )  # one connection per store; psycopg connections are not shared across threads at once
        self._db = _connect(dsn)
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA + AUDIT_SCHEMA:
                self._db.execute(statement)

    def _run(self, sql: str, params: Iterable[Any] = (), fetch: bool = False) -> list[tuple]:
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    with self._db.transaction():
                        cur = self._db.execute(sql.replace("?", "%s"), tuple(params))
                        return cur.fetchall() if fetch else []
                except psycopg.OperationalError:
                    # The server restarted or dropped the connection: connect again once (each call is
                    # its own transaction, so a retry repeats nothing half done).
                    if attempt == 2 or not self._db.closed and not self._db.broken:
                        raise
                    self._db = _connect(self.dsn)
        raise AssertionError("unreachable")

    def audit_sink(self) -> PostgresAudit:
        return PostgresAudit(self)

    def put_upload(self, name: str, groups: list[str], content: bytes, sha256: str, now: float) -> None:
        self._run(
            "INSERT INTO kofin_uploads VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "access_groups = excluded.access_groups, sha256 = excluded.sha256, content = excluded.content, "
            "uploaded = excluded.uploaded",
            (name, json.dumps(sorted(groups)), sha256, content, now),
        )

    def upload_records(self) -> dict[str, tuple[list[str], str]]:
        return {
            name: (json.loads(groups), sha)
            for name, groups, sha in self._run("SELECT name, access_groups, sha256 FROM kofin_uploads", fetch=True)
        }

    def upload_content(self, name: str) -> bytes:
        return bytes(self._run("SELECT content FROM kofin_uploads WHERE name = ?", (name,), fetch=True)[0][0])

    def shares_uploads(self) -> bool:
        return True

    def describe(self) -> str:
        return f"postgresql {_safe(self.dsn)}"

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresAudit:
    """The audit chain in the store's database: `append` is what kofin.serve.audit.write_audit calls."""

    def __init__(self, store: PostgresStore):
        self.store = store
        self.where = f"{_safe(store.dsn)} (kofin_audit)"

    def append(self, clean: dict[str, Any]) -> dict[str, Any]:
        self.store._run("SELECT 1")  # reconnects a dropped connection before the transaction below
        db = self.store._db
        with self.store._lock, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
            head = db.execute("SELECT lines, hash FROM kofin_audit_head WHERE id = 1").fetchone()
            last = db.execute("SELECT seq, line, hash FROM kofin_audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev, seq = self._tail(head, last)
            clean.update(seq=seq, prev=prev)
            clean["hash"] = line_hash(clean)
            db.execute(
                "INSERT INTO kofin_audit (seq, line, hash) VALUES (%s, %s, %s)",
                (seq, canonical(clean).decode("utf-8"), clean["hash"]),
            )
            db.execute(
                "INSERT INTO kofin_audit_head (id, lines, hash) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET lines = excluded.lines, hash = excluded.hash",
                (seq, clean["hash"]),
            )
        return clean

    def check(self) -> None:
        """AuditTampered now if the next append would be refused (kofin.serve.audit.check_appendable)."""
        # One statement, one snapshot: two SELECTs could straddle another replica's commit and see
        # its new line with the old head (a false alarm). Appends take the lock; this check does not.
        self.store._run("SELECT 1")
        db = self.store._db
        with self.store._lock:
            row = db.execute(
                "SELECT h.lines, h.hash, a.seq, a.line, a.hash FROM (SELECT 1) one "
                "LEFT JOIN kofin_audit_head h ON h.id = 1 "
                "LEFT JOIN LATERAL (SELECT seq, line, hash FROM kofin_audit ORDER BY seq DESC LIMIT 1) a ON true"
            ).fetchone()
        head = None if row[0] is None else (row[0], row[1])
        last = None if row[2] is None else (row[2], row[3], row[4])
        self._tail(head, last)

    def _tail(self, head, last) -> tuple[str, int]:
        if head is None:
            if last is not None:
                refuse_tampered(self.where, "the chain has lines but kofin_audit_head is empty")
            return GENESIS, 1
        if last is None:
            refuse_tampered(self.where, f"kofin_audit_head says {head[0]} lines but kofin_audit is empty")
        try:
            row = json.loads(last[1])
            ok = line_hash(row) == last[2] == row.get("hash") and row.get("seq") == last[0]
        except ValueError:
            ok = False
        if not ok or last[0] != head[0] or last[2] != head[1]:
            refuse_tampered(
                self.where,
                f"kofin_audit_head says the chain ends at entry {head[0]} ({str(head[1])[:12]}…) "
                f"but kofin_audit ends with entry {last[0]} (lines were deleted or edited)",
            )
        return last[2], int(last[0]) + 1


def verify_pg_audit(dsn: str) -> AuditCheck:
    """`kofin audit verify` for the chain in PostgreSQL: every line's hash, seq and prev, and the head."""
    db = _connect(dsn)
    try:
        rows = db.execute("SELECT line FROM kofin_audit ORDER BY seq").fetchall()
        head = db.execute("SELECT lines, hash FROM kofin_audit_head WHERE id = 1").fetchone()
    finally:
        db.close()
    check = AuditCheck(_safe(dsn))
    head_record = {"lines": head[0], "hash": head[1]} if head else None
    return check_chain(check, [r[0].encode("utf-8") for r in rows], head_record, "kofin_audit_head")
