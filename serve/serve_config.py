"""`ServeConfig`: what `kofin serve --config configs/serve/<name>.yaml` reads.

Run as: a library; serve/app.py builds the chat from it. Every key is described once here;
`kofin serve --help` lists them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig
from kofin.serve.chunking import ChunkingConfig
from kofin.serve.index import IndexConfig
from kofin.serve.loaders import SUFFIXES
from kofin.serve.settings import AnswerSettings
from kofin.serve.users import User

EXAMPLES = [
    "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?",
    "예금자보호 한도는 얼마인가요?",
    "해외송금 한도와 필요한 서류는 무엇인가요?",
    "신용카드를 분실했을 때 어떻게 해야 하나요?",
]


class UploadConfig(KofinModel):
    dir: ResolvedPath | None = Field(None, description="Where admins' uploaded files are kept (outside the KB folder, which ingest replaces whole). Default: <output_dir>/uploads.")
    max_file_mb: float = Field(10.0, gt=0, le=200, description="Largest file an admin may upload.")
    types: list[str] = Field(default_factory=lambda: list(SUFFIXES), description="Allowed file suffixes (a subset of what ingest reads).")
    groups: list[str] = Field(default_factory=lambda: ["all", "branch", "credit", "compliance"], description="Access groups offered in the upload form.")

    @model_validator(mode="after")
    def _known(self) -> "UploadConfig":
        self.types = [t.lower() if t.startswith(".") else f".{t.lower()}" for t in self.types]
        unknown = [t for t in self.types if t not in SUFFIXES]
        if unknown:
            raise ValueError(f"types {unknown} cannot be ingested; choose from {list(SUFFIXES)}")
        return self


class ServeConfig(StageConfig, AnswerSettings):
    """`output_dir` holds the chat's own state: audit.jsonl (+ .head) and uploads/."""

    kb: ResolvedPath = Field(description="Knowledge-base folder the chat answers from.")
    build_from: list[ResolvedPath] = Field(default_factory=list, description="Documents to ingest when the KB folder does not exist yet (and on re-index), e.g. data_ko/kb.")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Chunking when the chat builds or updates the KB.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Index settings when the chat builds or updates the KB.")
    users: list[User] = Field(default_factory=list, description="Users (name, password_hash, groups, admin); see `kofin serve hash-password`.")
    users_file: ResolvedPath | None = Field(None, description="A YAML file with more users (`users:` list, same fields); keeps hashes out of the config.")
    audit_log: ResolvedPath | None = Field(None, description="Hash-chained audit log (`kofin audit verify` checks it). Default: <output_dir>/audit.jsonl.")
    server_name: str = Field("127.0.0.1", description="Address to bind; the bank's internal interface, never a public one. Never shared through gradio.live.")
    server_port: int = Field(7860, ge=1, le=65535, description="Port to bind.")
    server_names: list[str] = Field(default_factory=list, description=(
        "Host names the chat answers as (the Host header, without port), e.g. [chat.bank.local]; any other Host is "
        "refused (DNS rebinding). Always allowed: server_name itself, and localhost/127.0.0.1/::1 when bound to loopback."))
    concurrency_limit: int = Field(8, ge=1, le=256, description="Answers computed at the same time (Gradio queue workers); more wait in the queue.")
    queue_size: int = Field(256, ge=1, description="Most requests waiting in the queue; beyond it users are told the server is busy.")
    max_question_chars: int = Field(1000, ge=10, description="Longer questions are refused.")
    title: str = Field("가람은행 업무 도우미", description="Page title.")
    examples: list[str] = Field(default_factory=lambda: list(EXAMPLES), description="Example questions shown under the input.")
    uploads: UploadConfig = Field(default_factory=UploadConfig, description="Admin uploads.")

    @model_validator(mode="after")
    def _check(self) -> "ServeConfig":
        if not self.users and self.users_file is None:
            raise ValueError("no users: list users (name, password_hash, groups) or give users_file; the chat never runs without login")
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
    def audit_path(self) -> Path:
        return self.audit_log or self.output_dir / "audit.jsonl"
