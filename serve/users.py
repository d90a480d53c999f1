"""Chat users: salted scrypt password hashes, access groups, admin flag; the password check.

Run as:
    kofin serve hash-password            (asks twice, prints a hash for a users file)

A users file (or the `users:` list of a serve config) holds only hashes, never passwords:

    users:
      - name: teller
        password_hash: scrypt$16384$8$1$<salt, base64>$<key, base64>
        groups: [branch]          # access groups; `all` documents are open to everyone
        admin: false              # admins may upload documents and re-index (and read `admins` documents)

Directory (LDAP) and SSO users are not listed here: kofin.serve.ldap_login maps their groups at
each login and keeps them in the shared store, where `UserRegistry.get` finds them. A name listed
here is always this list's user (small sites, break-glass administrators).

scrypt (stdlib `hashlib.scrypt`, n=2^14, r=8, p=1: ~16 MiB and tens of ms per check) makes a
stolen file slow to brute-force; the comparison is constant-time and an unknown name costs the
same as a wrong password, so login timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kofin.config import KofinModel

SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_NAME = re.compile(r"^[\w.@-]{1,64}$")  # \w covers Hangul: 창구직원 is a valid login
_GROUP = re.compile(r"^[\w.-]{1,64}$")
# Every administrator has this access group: what ingest gives a document that declares none.
ADMINS_GROUP = "admins"


def check_groups(groups: list[str]) -> list[str]:
    bad = [g for g in groups if not _GROUP.match(g)]
    if bad:
        raise ValueError(f"group names {bad} must be letters, digits, '.', '_' or '-'")
    return groups


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**26)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"{SCHEME}${n}${r}${p}${b64(salt)}${b64(key)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != SCHEME:
        raise ValueError(f"unknown scheme {scheme!r}")
    return int(n), int(r), int(p), base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)


def check_password(password: str, stored: str) -> bool:
    n, r, p, salt, key = _parse(stored)
    got = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=2**26)
    return hmac.compare_digest(got, key)


_DUMMY = hash_password(secrets.token_hex(8))  # checked for unknown names, so they take as long


class User(KofinModel):
    name: str = Field(description="Login name (letters incl. Hangul, digits, . _ @ -).")
    password_hash: str = Field(
        description="`kofin serve hash-password` output (scrypt$n$r$p$salt$key); never a plain password."
    )
    groups: list[str] = Field(
        default_factory=list,
        description="Access groups (branch, credit, compliance ...); `all` documents are open to every user.",
    )
    admin: bool = Field(False, description="May upload documents into the KB and re-index.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a login name: use 1-64 letters, digits, '.', '_', '@' or '-'")
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        try:
            _parse(v)
        except (ValueError, TypeError):
            raise ValueError(
                "not a password hash; make one with `kofin serve hash-password` (plain passwords are never stored)"
            ) from None
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        return check_groups(v)

    @model_validator(mode="after")
    def _admins_read_unlabelled(self) -> User:
        if self.admin and ADMINS_GROUP not in self.groups:
            self.groups = [*self.groups, ADMINS_GROUP]
        return self


class UsersFile(KofinModel):
    users: list[User] = Field(description="The chat's users.")


class UserRegistry:
    """Who may log in, and with which groups. kofin.serve.sessions calls `check` at login (off the
    event loop) and everything else asks `get` for the logged-in user's groups."""

    def __init__(self, users: list[User]):
        names = [u.name for u in users]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            from kofin.errors import KofinError

            raise KofinError(f"users: {', '.join(dupes)} listed more than once; each login name once")
        self.users = {u.name: u for u in users}
        # Users who signed on through the directory or the SSO proxy, with the groups mapped at their
        # latest login, from the shared store (so every replica sees them): set by kofin serve.
        self.directory: Callable[[str], Any] | None = None

    @classmethod
    def load(cls, inline: list[User], path: Path | None) -> UserRegistry:
        users = list(inline)
        if path is not None:
            from kofin.config import load_config

            users += load_config(UsersFile, path).users  # ConfigError names file:line and key
        return cls(users)

    def check(self, username: str, password: str) -> bool:
        user = self.users.get(username)
        ok = check_password(password, user.password_hash if user else _DUMMY)
        return ok and user is not None

    def get(self, username: str | None) -> User | None:
        """A YAML user, else a directory user (no password hash: they never log in through this list)."""
        if not username:
            return None
        user = self.users.get(username)
        if user is None and self.directory is not None:
            found = self.directory(username)
            if found is not None:
                user = User.model_construct(
                    name=found.name, password_hash="", groups=list(found.groups), admin=bool(found.admin)
                )
        return user
