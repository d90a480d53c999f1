"""`ServeConfig`: what `kofin serve --config configs/serve/<name>.yaml` reads.

Run as: a library; serve/app.py builds the chat from it. Every key is described once here;
`kofin serve --help` lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig
from kofin.serve.chunking import ChunkingConfig
from kofin.serve.index import IndexConfig
from kofin.serve.ldap_login import DirectoryConfig, SsoConfig
from kofin.serve.loaders import SUFFIXES
from kofin.serve.sessions import LoginConfig, SessionConfig
from kofin.serve.settings import AnswerSettings
from kofin.serve.users import User

EXAMPLES = [
    "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?",
    "예금자보호 한도는 얼마인가요?",
    "해외송금 한도와 필요한 서류는 무엇인가요?",
    "신용카드를 분실했을 때 어떻게 해야 하나요?",
]


class UploadConfig(KofinModel):
    dir: ResolvedPath | None = Field(
        None,
        description="Where admins' uploaded files are kept (outside the KB folder, which ingest replaces whole). "
        "Default: <output_dir>/uploads.",
    )
    max_file_mb: float = Field(10.0, gt=0, le=200, description="Largest file an admin may upload.")
    types: list[str] = Field(
        default_factory=lambda: list(SUFFIXES), description="Allowed file suffixes (a subset of what ingest reads)."
    )
    groups: list[str] = Field(
        default_factory=lambda: ["all", "branch", "credit", "compliance"],
        description="Access groups offered in the upload form.",
    )

    @model_validator(mode="after")
    def _known(self) -> UploadConfig:
        self.types = [t.lower() if t.startswith(".") else f".{t.lower()}" for t in self.types]
        unknown = [t for t in self.types if t not in SUFFIXES]
        if unknown:
            raise ValueError(f"types {unknown} cannot be ingested; choose from {list(SUFFIXES)}")
        return self


class StoreConfig(KofinModel):
    kind: Literal["file", "postgresql"] = Field(
        "file",
        description=(
            "Where sessions, lockouts, directory users and (postgresql) the audit chain live: `file` for one host "
            "(SQLite beside the audit.jsonl chain), `postgresql` for several replicas behind a load balancer."
        ),
    )
    path: ResolvedPath | None = Field(None, description="The file store. Default: <output_dir>/state.sqlite.")
    dsn: str | None = Field(
        None,
        description="PostgreSQL connection string for kind postgresql, e.g. postgresql://kofin@db.bank.local/kofin "
        "(the password from PGPASSWORD or ~/.pgpass, never in the config).",
    )

    @model_validator(mode="after")
    def _dsn(self) -> StoreConfig:
        if self.kind == "postgresql" and not self.dsn:
            raise ValueError("kind postgresql needs dsn: postgresql://USER@HOST:PORT/DB")
        return self


class ServeConfig(StageConfig, AnswerSettings):
    """`output_dir` holds the chat's own state: audit.jsonl (+ .head) and uploads/."""

    kb: ResolvedPath = Field(description="Knowledge-base folder the chat answers from.")
    build_from: list[ResolvedPath] = Field(
        default_factory=list,
        description="Documents to ingest when the KB folder does not exist yet (and on re-index), e.g. data_ko/kb.",
    )
    chunking: ChunkingConfig = Field(
        default_factory=ChunkingConfig, description="Chunking when the chat builds or updates the KB."
    )
    index: IndexConfig = Field(
        default_factory=IndexConfig, description="Index settings when the chat builds or updates the KB."
    )
    users: list[User] = Field(
        default_factory=list, description="Users (name, password_hash, groups, admin); see `kofin serve hash-password`."
    )
    users_file: ResolvedPath | None = Field(
        None, description="A YAML file with more users (`users:` list, same fields); keeps hashes out of the config."
    )
    audit_log: ResolvedPath | None = Field(
        None, description="Hash-chained audit log (`kofin audit verify` checks it). Default: <output_dir>/audit.jsonl."
    )
    server_name: str = Field(
        "127.0.0.1",
        description="Address to bind; the bank's internal interface, never a public one. "
        "Never shared through gradio.live.",
    )
    server_port: int = Field(7860, ge=1, le=65535, description="Port to bind.")
    server_names: list[str] = Field(
        default_factory=list,
        description=(
            "Host names the chat answers as (the Host header, without port), e.g. [chat.bank.local]; any other Host is "
            "refused (DNS rebinding). "
            "Always allowed: server_name itself, and localhost/127.0.0.1/::1 when bound to loopback."
        ),
    )
    concurrency_limit: int = Field(
        8, ge=1, le=256, description="Answers computed at the same time (Gradio queue workers); more wait in the queue."
    )
    queue_size: int = Field(
        256, ge=1, description="Most requests waiting in the queue; beyond it users are told the server is busy."
    )
    max_question_chars: int = Field(1000, ge=10, description="Longer questions are refused.")
    title: str = Field("가람은행 업무 도우미", description="Page title.")
    examples: list[str] = Field(
        default_factory=lambda: list(EXAMPLES), description="Example questions shown under the input."
    )
    uploads: UploadConfig = Field(default_factory=UploadConfig, description="Admin uploads.")
    sessions: SessionConfig = Field(
        default_factory=SessionConfig, description="Session expiry (idle and absolute) and the cookie."
    )
    login: LoginConfig = Field(default_factory=LoginConfig, description="Login throttling and lockout.")
    store: StoreConfig = Field(
        default_factory=StoreConfig, description="Shared state: a file (one host) or PostgreSQL (replicas)."
    )
    directory: DirectoryConfig | None = Field(
        None, description="LDAP sign-on for names not in the YAML users, with the group mapping table."
    )
    sso: SsoConfig | None = Field(
        None, description="Trusted-header sign-on from the bank's SSO proxy (its addresses only)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Load balancer / proxy addresses whose X-Forwarded-For names the client "
        "(for per-address login throttling).",
    )

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.users and self.users_file is None and self.directory is None and self.sso is None:
            raise ValueError(
                "no users: list users (name, password_hash, groups), give users_file, or configure directory/sso; "
                "the chat never runs without login"
            )
        return self

    def allowed_hosts(self) -> list[str]:
        names = [self.server_name, *self.server_names]
        if self.server_name in ("127.0.0.1", "localhost", "::1"):
            names += ["127.0.0.1", "localhost", "::1"]
        return sorted({n.lower() for n in names if n not in ("0.0.0.0", "::")})

    @property
    def upload_dir(self) -> Path:
        return self.uploads.dir or self.output_dir / "uploads"

    @property
    def store_path(self) -> Path:
        return self.store.path or self.output_dir / "state.sqlite"

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.output_dir / "audit.jsonl"
