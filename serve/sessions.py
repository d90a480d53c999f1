"""Login, sessions and lockouts of the chat: who may sign on, for how long, and the audit events.

Run as: a library; serve/guard.py calls it for /login, /logout and every request's session.

- Sessions expire server-side: after `sessions.idle_minutes` without a request (default 10, as
  Korean e-finance supervision expects of staff terminals) and `sessions.absolute_hours` after
  login (default 8), whatever the browser keeps. Logout is a POST that deletes the session in the
  store, so the cookie is worthless afterwards on every replica.
- Logins are throttled per address and per user name (`login.*_attempts_per_minute`), and a name is
  locked after `login.max_failures` failures within `login.failure_window_minutes` (default 5 in
  15 minutes) for `login.lockout_minutes` (0: until an administrator unlocks it in 문서 관리).
  Unknown names are counted and locked like real ones, so the answers never tell which exist.
- Every login success, failure, refusal (throttled, locked), lockout, unlock, logout and expiry is
  an event line in the audit chain (a failed name is PII-masked: people type odd things there).

All state goes through one store (kofin.serve.store): a file for one host, PostgreSQL for replicas.
Times come from `clock` (UNIX seconds), so tests move time instead of sleeping.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from kofin.config import KofinModel
from kofin.serve.audit import AuditTampered, mask, write_audit
from kofin.serve.store import DirectoryUser, SessionRow, SqlStore

log = logging.getLogger("kofin.serve.sessions")
NEVER = 4102444800.0  # 2100-01-01: a lock that only an administrator lifts
# A session's last request is written at most this often: one write per page's burst of requests,
# not per request (idle expiry is minutes; these seconds do not matter).
TOUCH_EVERY_S = 10.0


class SessionConfig(KofinModel):
    idle_minutes: float = Field(
        10.0, gt=0, description="A session with no request for this long is over (server-side)."
    )
    absolute_hours: float = Field(8.0, gt=0, description="A session is over this long after login, however active.")
    cookie_secure: bool = Field(
        False, description="Send the session cookie over HTTPS only (set true behind the bank's TLS proxy)."
    )


class LoginConfig(KofinModel):
    max_failures: int = Field(
        5, ge=1, description="Failed logins for one name within failure_window_minutes that lock it."
    )
    failure_window_minutes: float = Field(15.0, gt=0, description="How far back failures count towards a lockout.")
    lockout_minutes: float = Field(
        15.0, ge=0, description="How long a locked name stays locked; 0 = until an administrator unlocks it."
    )
    user_attempts_per_minute: int = Field(
        10, ge=1, description="Failed attempts for one name per minute before further ones are refused unchecked."
    )
    address_attempts_per_minute: int = Field(
        20,
        ge=1,
        description="Failed attempts from one address per minute (any names) "
        "before further ones are refused unchecked.",
    )


@dataclass
class LoginOutcome:
    status: int  # 200 ok, 401 wrong, 423 locked, 429 throttled, 503 directory down
    message: str  # Korean, for the login page
    token: str | None = None
    user: str | None = None


@dataclass
class Resolved:
    row: SessionRow | None
    expired: str | None = None  # "idle" | "absolute" when a session just ended


WRONG = "아이디 또는 비밀번호가 올바르지 않습니다."
THROTTLED = "로그인 시도가 너무 많습니다. 1분 후 다시 시도하세요."
AUDIT_BROKEN = "감사 로그가 손상되어 로그인을 기록할 수 없습니다. 관리자에게 알려 주세요."
DIRECTORY_DOWN = "직원 디렉터리(LDAP)에 연결할 수 없습니다. 잠시 후 다시 시도하거나 관리자에게 알려 주세요."


def locked_message(until: float, now: float) -> str:
    if until >= NEVER:
        return "로그인 실패가 여러 번 있어 계정이 잠겼습니다. 관리자에게 잠금 해제를 요청하세요."
    minutes = max(1, round((until - now) / 60))
    return (
        "로그인 실패가 여러 번 있어 계정이 잠겼습니다. "
        f"{minutes}분 후 다시 시도하거나 관리자에게 잠금 해제를 요청하세요."
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Sessions:
    def __init__(
        self,
        store: SqlStore,
        users,
        audit_path: Path,
        sessions: SessionConfig,
        login: LoginConfig,
        directory=None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.users, self.audit_path = store, users, Path(audit_path)
        self.cfg, self.login_cfg, self.directory, self.clock = sessions, login, directory, clock

    # ------------------------------------------------------------ login

    async def login(self, name: str, password: str, address: str) -> LoginOutcome:
        import asyncio

        # scrypt (~60 ms) and the directory's round trips run off the event loop that streams answers.
        try:
            return await asyncio.to_thread(self.login_sync, name, password, address)
        except AuditTampered:  # a login the audit chain cannot record is not granted (already alarmed)
            return LoginOutcome(503, AUDIT_BROKEN)

    def login_sync(self, name: str, password: str, address: str) -> LoginOutcome:
        now, name = self.clock(), name.strip()
        if not name or not password:
            return LoginOutcome(401, "아이디와 비밀번호를 입력하세요.")
        minute = now - 60
        if (
            self.store.failures(f"addr:{address}", minute) >= self.login_cfg.address_attempts_per_minute
            or self.store.failures(f"user:{name}", minute) >= self.login_cfg.user_attempts_per_minute
        ):
            self._event("login", "throttled", name, address)
            return LoginOutcome(429, THROTTLED)
        until = self.store.locked_until(name)
        if until is not None and until > now:
            self._event("login", "locked", name, address)
            return LoginOutcome(423, locked_message(until, now))
        if until is not None:  # the lock ran out: a fresh set of tries
            self.store.unlock(name)
        try:
            user = self._authenticate(name, password)
        except ConnectionError as err:
            log.error("directory sign-on failed: %s", err)
            self._event("login", "directory_unavailable", name, address)
            return LoginOutcome(503, DIRECTORY_DOWN)
        if user is None:
            return self._failed(name, address, now)
        self.store.clear_failures(f"user:{name}")
        return LoginOutcome(200, "", self.start(user, address), user.name)

    def _failed(self, name: str, address: str, now: float) -> LoginOutcome:
        self.store.record_failure(f"user:{name}", now)
        self.store.record_failure(f"addr:{address}", now)
        count = self.store.failures(f"user:{name}", now - self.login_cfg.failure_window_minutes * 60)
        self._event("login", "failure", name, address, failures=count)
        if count >= self.login_cfg.max_failures:
            until = now + self.login_cfg.lockout_minutes * 60 if self.login_cfg.lockout_minutes else NEVER
            self.store.lock(name, until, now)
            self._event("lockout", "locked", name, address, failures=count, until=until)
            return LoginOutcome(423, locked_message(until, now))
        return LoginOutcome(401, WRONG)

    def _authenticate(self, name: str, password: str) -> DirectoryUser | None:
        """YAML users first (small sites, break-glass admins), then the directory when configured."""
        if name in self.users.users or self.directory is None:
            return DirectoryUser(name, source="password") if self.users.check(name, password) else None
        found = self.directory.authenticate(name, password)  # ConnectionError when the server is down
        if found is not None:
            self.store.put_directory_user(found, self.clock())
        return found

    def start(self, user: DirectoryUser, address: str) -> str:
        """A new session for a signed-on user; returns the cookie's token (only its hash is stored)."""
        now = self.clock()
        # Abandoned sessions and old failures would pile up: each login clears what has run out.
        self.store.purge_sessions(now - self.cfg.idle_minutes * 60, now - self.cfg.absolute_hours * 3600)
        self.store.purge_failures(now - max(self.login_cfg.failure_window_minutes * 60, 60))
        known = self.users.get(user.name)
        groups, admin = (list(known.groups), bool(known.admin)) if known is not None else (user.groups, user.admin)
        token = secrets.token_urlsafe(32)
        self.store.add_session(SessionRow(token_hash(token), user.name, groups, admin, user.source, address, now, now))
        self._event("login", "success", user.name, address, source=user.source)
        return token

    # ------------------------------------------------------------ every request

    def resolve(self, token: str | None, activity: bool = True) -> Resolved:
        """The live session of a cookie's token; an expired one is deleted (and audited) here."""
        if not token:
            return Resolved(None)
        digest = token_hash(token)
        row = self.store.session(digest)
        if row is None:
            return Resolved(None)
        now = self.clock()
        reason = (
            "absolute"
            if now - row.created >= self.cfg.absolute_hours * 3600
            else "idle"
            if now - row.last_seen >= self.cfg.idle_minutes * 60
            else None
        )
        if reason:
            self.store.end_session(digest)
            self._event("session_expired", reason, row.user, row.address)
            return Resolved(None, reason)
        if activity and now - row.last_seen >= TOUCH_EVERY_S:
            self.store.touch(digest, now)
        return Resolved(row)

    def logout(self, token: str | None, address: str) -> str | None:
        resolved = self.resolve(token, activity=False)
        if resolved.row is None:
            return None
        self.store.end_session(resolved.row.token_hash)
        self._event("logout", "success", resolved.row.user, address)
        return resolved.row.user

    # ------------------------------------------------------------ administration

    def lockouts(self) -> dict[str, float]:
        return self.store.lockouts(self.clock())

    def unlock(self, name: str, by: str) -> bool:
        done = self.store.unlock(name)
        if done:
            self._event("unlock", "success", name, "", by=by)
        return done

    def _event(self, event: str, outcome: str, user: str, address: str, **extra) -> None:
        # A failed or refused name may be anything typed into the field (a resident number too).
        shown = user if outcome in ("success", "idle", "absolute") or event == "unlock" else mask(user)
        try:
            write_audit(
                self.audit_path, {"event": event, "outcome": outcome, "user": shown, "address": address, **extra}
            )
        except AuditTampered:
            if event == "login":
                raise  # no login without its record
            # An expiry, logout or unlock still takes effect; the refusal was already alarmed.
