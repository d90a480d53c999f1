"""What the chat does, without the page: answer as a logged-in user (rendered by serve/render.py),
take admin uploads, re-index. serve/app.py wires these into Gradio; tests call them directly.

Run as: a library (`kofin serve --config configs/serve/demo.yaml` runs serve/app.py).

The user always comes from the login session (Gradio's `request.username`), never from anything
the page sends: access control is the same retrieval code path as `kofin ask`, with that user's
groups, so hiding something in the UI is never what protects it; the conversation sent back as
`history` only rewrites the query (and a forged one could do no more).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kofin.data_ko.korean import clean_text
from kofin.errors import KofinError
from kofin.rundir import is_complete
from kofin.serve.ask import AskConfig, AskResult, Assistant
from kofin.serve.render import answer_markdown, final_markdown, md_escape
from kofin.serve.serve_config import ServeConfig
from kofin.serve.users import User, UserRegistry

BACKEND_NOTICE = {
    "extractive": "추출형 — 문서의 문장을 그대로 인용합니다 (생성 모델 없음)",
    "transformers": "생성형 — 로컬 모델 `{model}` (인용은 출처와 대조해 검증합니다)",
    "openai": "생성형 — 내부 추론 서버 `{model}` (인용은 출처와 대조해 검증합니다)",
}


class AccessDenied(KofinError):
    """A request from a session that is not logged in, or not an admin where one is needed."""


@dataclass
class Chat:
    cfg: ServeConfig
    users: UserRegistry
    assistant: Assistant
    _ingest_lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ who is asking

    def user(self, username: str | None) -> User:
        user = self.users.get(username)
        if user is None:
            raise AccessDenied("로그인이 필요합니다.")
        return user

    def backend_notice(self) -> str:
        gen = self.cfg.generation
        model = Path(gen.model_path).name if gen.model_path else gen.model
        return "**답변 방식:** " + BACKEND_NOTICE[gen.backend].format(model=model)

    def describe(self) -> str:
        kb = self.assistant.retriever.kb
        return (
            f"{self.cfg.kb}: {len({c['doc_id'] for c in kb.chunks})} documents, {len(kb)} chunks; "
            f"{len(self.users.users)} users; backend {self.cfg.generation.backend}; audit {self.cfg.audit_path}"
        )

    # ------------------------------------------------------------ answering

    def answer(
        self, question: str, username: str | None, history: list[dict] | None = None
    ) -> Iterator[tuple[str, AskResult | None]]:
        """(chat Markdown so far, None) while the answer streams, then (final Markdown, result).

        `history`: the earlier messages as plain text (`conversation` of the Chatbot's messages).
        The groups are the logged-in user's, whatever the history says.
        """
        user = self.user(username)
        question = clean_text(question).strip()  # a lone surrogate from the API would fail Kiwi and the audit log
        if len(question) > self.cfg.max_question_chars:
            yield f"질문이 너무 깁니다 ({len(question)}자). {self.cfg.max_question_chars}자 이내로 줄여 주세요.", None
            return
        raw = ""
        for _, value in self.assistant.stream(
            question, user.name, groups=tuple(user.groups), channel="chat", history=history or None
        ):
            if isinstance(value, AskResult):  # ("done", result)
                yield final_markdown(value), value
            else:  # ("delta", text)
                raw += value
                yield answer_markdown(raw), None

    # ------------------------------------------------------------ admin

    def require_admin(self, username: str | None) -> User:
        user = self.user(username)
        if not user.admin:
            raise AccessDenied("관리자만 문서를 올리거나 다시 색인할 수 있습니다.")
        return user

    def upload(self, files: list[tuple[Path, str]], groups: list[str], username: str | None) -> str:
        """Save each (temporary path, original name) after the checks; ingest the accepted ones."""
        from kofin.serve.uploads import UploadRejected, save_upload

        self.require_admin(username)
        unknown = sorted(set(groups) - set(self.cfg.uploads.groups))
        if unknown:
            raise AccessDenied(f"알 수 없는 열람 그룹: {', '.join(unknown)}")
        lines, saved = [], 0
        for path, name in files:
            try:
                save_upload(
                    path, name, groups, self.cfg.upload_dir, self.cfg.uploads.types, self.cfg.uploads.max_file_mb
                )
                saved += 1
                lines.append(f"- 저장: {name} (열람 그룹: {', '.join(sorted(groups))})")
            except UploadRejected as err:
                lines.append(f"- 거부: {name!r} — {err}")
        if saved:
            lines.append(self.ingest(rebuild=False))
        return "\n".join(lines) or "올릴 파일을 고르세요."

    def reindex(self, username: str | None) -> str:
        self.require_admin(username)
        return self.ingest(rebuild=True)

    def ingest(self, rebuild: bool) -> str:
        with self._ingest_lock:
            report = build_kb(self.cfg, rebuild=rebuild)
            self.assistant.reload_kb()
        skipped = "".join(f"\n- 건너뜀: {Path(p).name} — {why}" for p, why in report.skipped)
        if report.conflicts:  # admins only: the listing names documents of every group
            from kofin.serve.conflicts import describe

            skipped += f"\n\n⚠ 문서 간 내용이 다른 곳 {len(report.conflicts)}건 (어느 쪽이 맞는지 확인하세요):"
            skipped += "".join(f"\n- {md_escape(describe(c))}" for c in report.conflicts)
        changes = f"추가 {len(report.added)}, 변경 {len(report.updated)}, 삭제 {len(report.removed)}"
        return f"색인 완료: 문서 {report.documents}개, 조각 {report.chunks}개 ({changes}){skipped}"

    def uploaded_for(self, username: str | None) -> str:
        """The upload listing for an admin; nothing for anyone else (which documents exist for
        which groups is itself restricted)."""
        user = self.users.get(username)
        return self.uploaded() if user is not None and user.admin else ""

    def uploaded(self) -> str:
        from kofin.serve.uploads import read_access

        access = read_access(self.cfg.upload_dir) if self.cfg.upload_dir.is_dir() else {}
        if not access:
            return "올린 문서가 없습니다."
        return "\n".join(
            f"- {md_escape(name)} — 열람 그룹: {', '.join(groups)}" for name, groups in sorted(access.items())
        )


def build_kb(cfg: ServeConfig, rebuild: bool = False):
    """Ingest `build_from` plus the uploaded files into `cfg.kb` (ingest reads their groups from the
    upload folder's access.json)."""
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest
    from kofin.serve.uploads import recorded_uploads

    icfg = IngestConfig(
        output_dir=cfg.kb,
        inputs=[*cfg.build_from, *recorded_uploads(cfg.upload_dir)],
        rebuild=rebuild,
        chunking=cfg.chunking,
        index=cfg.index,
        max_file_mb=max(cfg.uploads.max_file_mb, 50.0),
    )
    return ingest(icfg)


def prepare(cfg: ServeConfig) -> Chat:
    """Users, KB (built from `build_from` when missing) and the assistant: everything but the page."""
    users = UserRegistry.load(cfg.users, cfg.users_file)
    if not is_complete(cfg.kb):
        if not cfg.build_from:
            raise KofinError(
                f"kb {cfg.kb}: no complete knowledge base there; build one with `kofin ingest --kb {cfg.kb} PATHS...` "
                "or set build_from: [folder of documents] in the serve config"
            )
        missing = [str(p) for p in cfg.build_from if not p.exists()]
        if missing:
            raise KofinError(f"build_from: {', '.join(missing)} not found; the KB {cfg.kb} cannot be built")
        build_kb(cfg)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    ask = AskConfig(kb=cfg.kb, audit_log=cfg.audit_path, **cfg.answer_settings())
    chat = Chat(cfg, users, Assistant(ask))
    # The first question loads Kiwi's model and warms the indexes (seconds); pay that before the
    # first user does. No answer is produced, so nothing reaches the audit log.
    chat.assistant.retriever.search(cfg.examples[0] if cfg.examples else "예금", ("all",), 1)
    return chat


# ---------------------------------------------------------------- rendering
