"""The chat's state besides the KB: sessions, login failures and lockouts, directory users.

Run as: a library; `kofin serve` opens the store its config names (`store.kind`).

One interface, two implementations, the same SQL:
- `FileStore` (the default, one host): an SQLite file, `<output_dir>/state.sqlite`, beside the
  file audit chain (`audit.jsonl` + `.head`, kofin.serve.audit). SQLite locks the file, so several
  `kofin serve` processes on one host share it too.
- `PostgresStore` (kofin.serve.store_pg, several replicas): the same tables in PostgreSQL, plus
  the audit chain itself, appended under a transaction that locks the chain's head.

Only the sha256 of a session token is stored: whoever reads the store cannot use a session.
Times are UNIX seconds from the caller's clock (kofin.serve.sessions), so tests can move time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kofin_sessions (
        token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, access_groups TEXT NOT NULL, admin INTEGER NOT NULL,
        source TEXT NOT NULL, address TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kofin_sessions_user ON kofin_sessions (username)",
    "CREATE TABLE IF NOT EXISTS kofin_login_failures (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS kofin_login_failures_key ON kofin_login_failures (key, at)",
    "CREATE TABLE IF NOT EXISTS kofin_lockouts "
    "(username TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL, since DOUBLE PRECISION NOT NULL)",
    """CREATE TABLE IF NOT EXISTS kofin_directory_users (
        username TEXT PRIMARY KEY, access_groups TEXT NOT NULL, admin INTEGER NOT NULL, source TEXT NOT NULL,
        updated DOUBLE PRECISION NOT NULL)""",
]


@dataclass
class SessionRow:
    token_hash: str
    user: str
    groups: list[str]
    admin: bool
    source: str  # password | ldap | sso
    address: str
    created: float
    last_seen: float


@dataclass
class DirectoryUser:
    """A user who signed on through the directory or the SSO proxy: groups as mapped at that login."""

    name: str
    groups: list[str] = field(default_factory=list)
    admin: bool = False
    source: str = "ldap"


class SqlStore:
    """The store's operations in SQL that SQLite and PostgreSQL both run (`?` placeholders;
    PostgresStore rewrites them). Subclasses provide `_run` (one transaction per call)."""

    kind = "sql"

    def _run(self, sql: str, params: Iterable[Any] = (), fetch: bool = False) -> list[tuple]:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the state lives, for the startup line (no password): each concrete store says."""
        raise NotImplementedError

    # ------------------------------------------------------------ sessions

    def add_session(self, row: SessionRow) -> None:
        self._run(
            "INSERT INTO kofin_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.token_hash,
                row.user,
                json.dumps(row.groups),
                int(row.admin),
                row.source,
                row.address,
                row.created,
                row.last_seen,
            ),
        )

    def session(self, token_hash: str) -> SessionRow | None:
        rows = self._run(
            "SELECT token_hash, username, access_groups, admin, source, address, created, last_seen "
            "FROM kofin_sessions WHERE token_hash = ?",
            (token_hash,),
            fetch=True,
        )
        if not rows:
            return None
        t, user, groups, admin, source, address, created, last_seen = rows[0]
        return SessionRow(t, user, json.loads(groups), bool(admin), source, address, float(created), float(last_seen))

    def touch(self, token_hash: str, now: float) -> None:
        self._run(
            "UPDATE kofin_sessions SET last_seen = ? WHERE token_hash = ? AND last_seen < ?", (now, token_hash, now)
        )

    def end_session(self, token_hash: str) -> None:
        self._run("DELETE FROM kofin_sessions WHERE token_hash = ?", (token_hash,))

    def end_user_sessions(self, user: str) -> int:
        rows = self._run("SELECT count(*) FROM kofin_sessions WHERE username = ?", (user,), fetch=True)
        self._run("DELETE FROM kofin_sessions WHERE username = ?", (user,))
        return int(rows[0][0])

    def purge_sessions(self, idle_before: float, created_before: float) -> None:
        self._run("DELETE FROM kofin_sessions WHERE last_seen < ? OR created < ?", (idle_before, created_before))

    # ------------------------------------------------------------ login failures and lockouts

    def record_failure(self, key: str, now: float) -> None:
        self._run("INSERT INTO kofin_login_failures VALUES (?, ?)", (key, now))

    def failures(self, key: str, since: float) -> int:
        return int(
            self._run("SELECT count(*) FROM kofin_login_failures WHERE key = ? AND at >= ?", (key, since), fetch=True)[
                0
            ][0]
        )

    def clear_failures(self, key: str) -> None:
        self._run("DELETE FROM kofin_login_failures WHERE key = ?", (key,))

    def purge_failures(self, before: float) -> None:
        self._run("DELETE FROM kofin_login_failures WHERE at < ?", (before,))

    def lock(self, user: str, until: float, now: float) -> None:
        self._run(
            "INSERT INTO kofin_lockouts VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
            "until = excluded.until, since = excluded.since",
            (user, until, now),
        )

    def locked_until(self, user: str) -> float | None:
        rows = self._run("SELECT until FROM kofin_lockouts WHERE username = ?", (user,), fetch=True)
        return float(rows[0][0]) if rows else None

    def unlock(self, user: str) -> bool:
        had = self.locked_until(user) is not None
        self._run("DELETE FROM kofin_lockouts WHERE username = ?", (user,))
        self.clear_failures(f"user:{user}")
        return had

    def lockouts(self, now: float) -> dict[str, float]:
        return {
            u: float(t)
            for u, t in self._run(
                "SELECT username, until FROM kofin_lockouts WHERE until > ? ORDER BY username", (now,), fetch=True
            )
        }

    # ------------------------------------------------------------ directory users

    def put_directory_user(self, user: DirectoryUser, now: float) -> None:
        self._run(
            "INSERT INTO kofin_directory_users VALUES (?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
            "access_groups = excluded.access_groups, admin = excluded.admin, source = excluded.source, "
            "updated = excluded.updated",
            (user.name, json.dumps(user.groups), int(user.admin), user.source, now),
        )

    def directory_user(self, name: str) -> DirectoryUser | None:
        rows = self._run(
            "SELECT access_groups, admin, source FROM kofin_directory_users WHERE username = ?", (name,), fetch=True
        )
        return DirectoryUser(name, json.loads(rows[0][0]), bool(rows[0][1]), rows[0][2]) if rows else None

    # ------------------------------------------------------------ audit

    def audit_sink(self):
        """Where the audit chain lives when it is not the file at the configured path (None)."""
        return None

    def shares_uploads(self) -> bool:
        """Whether upload records (and bytes) live here; the file store leaves them in the upload
        folder's access.json, which one host already shares."""
        return False

    def close(self) -> None:
        pass


class FileStore(SqlStore):
    """The single-host default: one SQLite file (WAL, so readers never wait for a writer)."""

    kind = "file"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a lockout or a logout must survive a crash
        for statement in SCHEMA:
            self._db.execute(statement)

    def _run(self, sql: str, params: Iterable[Any] = (), fetch: bool = False) -> list[tuple]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(sql, tuple(params)).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return rows if fetch else []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def describe(self) -> str:
        return f"file {self.path}"


def open_store(kind: str, *, path: Path | None = None, dsn: str | None = None) -> SqlStore:
    if kind == "postgresql":
        from kofin.serve.store_pg import PostgresStore

        assert dsn, "store.dsn is required for postgresql (checked by the config)"
        return PostgresStore(dsn)
    assert path is not None
    return FileStore(path)
