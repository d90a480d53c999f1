"""Directory sign-on: LDAP bind with ldap3, and the trusted-header mode of a bank's SSO proxy.

Run as: a library; kofin.serve.sessions calls `Directory.authenticate` for names that are not in
the YAML users, and serve/guard.py calls `SsoConfig.user_for` for requests from the SSO proxy.

Banks keep staff in a directory, not in YAML. At every login the user's directory groups are read
and mapped to kofin access groups through the config's table, so a transfer out of compliance
takes effect at the next login:

    directory:
      url: ldap://ldap.bank.local:389
      user_dn: uid={user},ou=people,dc=bank,dc=local      # the bind DN of a login name
      group_base: ou=groups,dc=bank,dc=local
      mapping:
        groups: {tellers: [branch], compliance-officers: [branch, compliance], credit-review: [credit]}
        admin: [kofin-admins]                              # members of these are administrators

The password is checked by binding as the user (kofin never reads password hashes from the
directory); the groups are searched with the same connection (`group_filter`, `{dn}` is the
user's DN). A name is validated and DN-escaped before it reaches a DN or a filter. A directory that
cannot be reached is a ConnectionError (the login page says so; it is not counted as a failure).
The YAML users stay for small sites and break-glass administrators.

SSO: the proxy authenticates staff and adds a header with the user name (and optionally their
groups, mapped through the same kind of table). Only requests whose peer address is one of
`sso.proxies` are believed; anyone else sending the header is ignored.
"""

from __future__ import annotations

import math
import re

from pydantic import Field, field_validator

from kofin.config import KofinModel
from kofin.serve.store import DirectoryUser
from kofin.serve.users import ADMINS_GROUP, check_groups

_NAME = re.compile(r"^[\w.@-]{1,64}$")


class GroupMapping(KofinModel):
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Directory group (cn, or full DN) -> kofin access groups."
    )
    admin: list[str] = Field(
        default_factory=list, description="Directory groups whose members are kofin administrators."
    )

    @field_validator("groups")
    @classmethod
    def _kofin_groups(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for groups in v.values():
            check_groups(groups)
        return v

    def map(self, name: str, directory_groups: list[str], source: str) -> DirectoryUser:
        """The kofin user for a directory user in `directory_groups` (cn values or DNs)."""
        seen = {g.strip().lower() for g in directory_groups if g.strip()}
        seen |= {_cn(g) for g in seen}

        def member(key: str) -> bool:
            return key.strip().lower() in seen

        groups = sorted({g for key, mapped in self.groups.items() if member(key) for g in mapped})
        admin = any(member(key) for key in self.admin)
        if admin and ADMINS_GROUP not in groups:
            groups.append(ADMINS_GROUP)
        return DirectoryUser(name, groups, admin, source)


def _cn(dn: str) -> str:
    first = dn.split(",", 1)[0]
    return first.split("=", 1)[1].strip().lower() if first.lower().startswith("cn=") else dn


class DirectoryConfig(KofinModel):
    url: str = Field(description="ldap://host:389 or ldaps://host:636 of the bank's directory.")
    user_dn: str = Field(description="Bind DN of a login name, with {user}: uid={user},ou=people,dc=bank,dc=local.")
    group_base: str = Field(description="Where groups are searched, e.g. ou=groups,dc=bank,dc=local.")
    group_filter: str = Field(
        "(&(objectClass=groupOfNames)(member={dn}))", description="Groups of the user; {dn} is the user's DN (escaped)."
    )
    group_attribute: str = Field("cn", description="The attribute naming a group in the mapping table.")
    start_tls: bool = Field(False, description="Upgrade ldap:// with StartTLS before binding.")
    timeout_s: float = Field(5.0, gt=0, description="Connect and answer timeout.")
    mapping: GroupMapping = Field(
        default_factory=GroupMapping, description="Directory groups -> kofin groups and administrators."
    )

    @field_validator("user_dn")
    @classmethod
    def _has_user(cls, v: str) -> str:
        if "{user}" not in v:
            raise ValueError("user_dn must contain {user}, e.g. uid={user},ou=people,dc=bank,dc=local")
        return v

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("ldap://", "ldaps://")):
            raise ValueError("url must start with ldap:// or ldaps://")
        return v


class Directory:
    def __init__(self, cfg: DirectoryConfig):
        self.cfg = cfg

    def authenticate(self, name: str, password: str) -> DirectoryUser | None:
        """The mapped user when the directory accepts this name and password; None when it does not."""
        import ldap3
        from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPSocketOpenError
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        if not _NAME.match(name) or not password:
            return None
        dn = self.cfg.user_dn.format(user=escape_rdn(name))
        timeout = max(1, math.ceil(self.cfg.timeout_s))  # ldap3 packs the socket timeout as a whole number
        server = ldap3.Server(self.cfg.url, connect_timeout=timeout, get_info=ldap3.NONE)
        conn = ldap3.Connection(server, user=dn, password=password, receive_timeout=timeout, raise_exceptions=False)
        try:
            conn.open()
            if self.cfg.start_tls:
                conn.start_tls()
            if not conn.bind():
                return None  # invalidCredentials, or no such entry: the same answer
            conn.search(
                self.cfg.group_base,
                self.cfg.group_filter.format(dn=escape_filter_chars(dn)),
                attributes=[self.cfg.group_attribute],
            )
            groups = []
            for entry in conn.response or []:
                if entry.get("type") != "searchResEntry":
                    continue
                groups.append(entry["dn"])
                value = (entry.get("attributes") or {}).get(self.cfg.group_attribute)
                groups += [str(v) for v in (value if isinstance(value, list) else [value]) if v]
            return self.cfg.mapping.map(name, groups, "ldap")
        except LDAPBindError:
            return None
        except (LDAPSocketOpenError, LDAPException, OSError) as err:
            raise ConnectionError(f"directory {self.cfg.url}: {type(err).__name__}: {err}") from None
        finally:
            conn.unbind()


class SsoConfig(KofinModel):
    proxies: list[str] = Field(
        min_length=1, description="Addresses of the bank's SSO proxy; the user header is believed only from these."
    )
    user_header: str = Field("X-Remote-User", description="Header carrying the signed-on user name.")
    groups_header: str = Field(
        "X-Remote-Groups",
        description="Header with the user's directory groups (comma-separated), mapped through `mapping`.",
    )
    mapping: GroupMapping = Field(
        default_factory=GroupMapping,
        description="Directory groups (from groups_header) -> kofin groups and administrators.",
    )
    only: bool = Field(False, description="Refuse password login: every user comes through the proxy.")

    def user_for(self, name: str, groups_header: str, sessions) -> DirectoryUser | None:
        if not _NAME.match(name):
            return None
        known = sessions.users.users.get(name)  # a YAML user keeps its own groups
        if known is not None:
            return DirectoryUser(name, list(known.groups), known.admin, "sso")
        user = self.mapping.map(name, groups_header.split(","), "sso")
        sessions.store.put_directory_user(user, sessions.clock())
        return user
