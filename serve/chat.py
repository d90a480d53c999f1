"""What the chat does, without the page: answer as a logged-in user, render answers and sources,
take admin uploads, re-index. serve/app.py wires these into Gradio; tests call them directly.

Run as: a library (`kofin serve --config configs/serve/demo.yaml` runs serve/app.py).

The user always comes from the login session (Gradio's `request.username`), never from anything
the page sends: access control is the same retrieval code path as `kofin ask`, with that user's
groups, so hiding something in the UI is never what protects it; the conversation sent back as
`history` only rewrites the query (and a forged one could do no more). Document text is
untrusted: it is HTML-escaped in the sources panel and Markdown-escaped in the chat, autolinks
included (Gradio's Markdown, marked with GFM, turns a bare `http://x.y`, `www.x.y` or `a@b.c`
into a link), so a document cannot add links, images (an outside request) or markup to the page.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from kofin.errors import KofinError
from kofin.rundir import is_complete
from kofin.serve.answer import NO_ANSWER
from kofin.serve.ask import AskConfig, AskResult, Assistant
from kofin.data_ko.citations import CITATION as _CITE, bigrams
from kofin.data_ko.korean import clean_text, split_sentences
from kofin.serve.serve_config import ServeConfig
from kofin.serve.users import User, UserRegistry

_BULLET = re.compile(r"^(?:[-*•·]\s+)+")
# Markdown syntax, plus what GFM autolinks: the ':' of '://', the '.' of 'www.' and every '@'.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~&$@-]|:(?=//)|(?<=[wW]{3})\.)")
# What a chat message is made of besides the answer (caveat, conflicts, warnings, hints, the
# rewritten query): whole lines that an escaped answer line can never start with.
_DECORATION = re.compile(r"^[>_]")
HISTORY_MESSAGES = 6  # the last three exchanges go back to the answer path as `history`
HISTORY_CHARS = 2000  # per message: an earlier answer's topic is in its first lines
SOURCES_DISAGREE_TITLE = "⚠ 출처 간 내용이 다릅니다"
SUSPICIOUS_NOTE = "⚠ 문서 속 지시문 — 답변에 쓰지 않음"
NO_ANSWER_HINT = "질문을 더 구체적으로 바꾸어 보세요 (상품명·업무명·조건 등). 열람 권한이 있는 문서에서만 찾습니다."
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
        return (f"{self.cfg.kb}: {len({c['doc_id'] for c in kb.chunks})} documents, {len(kb)} chunks; "
                f"{len(self.users.users)} users; backend {self.cfg.generation.backend}; audit {self.cfg.audit_path}")

    # ------------------------------------------------------------ answering

    def answer(self, question: str, username: str | None,
               history: list[dict] | None = None) -> Iterator[tuple[str, AskResult | None]]:
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
        for kind, value in self.assistant.stream(question, user.name, groups=tuple(user.groups), channel="chat",
                                                  history=history or None):
            if kind == "delta":
                raw += value
                yield answer_markdown(raw), None
            else:
                yield final_markdown(value), value

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
                save_upload(path, name, groups, self.cfg.upload_dir, self.cfg.uploads.types, self.cfg.uploads.max_file_mb)
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
        return f"색인 완료: 문서 {report.documents}개, 조각 {report.chunks}개 (추가 {len(report.added)}, 변경 {len(report.updated)}, 삭제 {len(report.removed)}){skipped}"

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
        return "\n".join(f"- {md_escape(name)} — 열람 그룹: {', '.join(groups)}" for name, groups in sorted(access.items()))


def build_kb(cfg: ServeConfig, rebuild: bool = False):
    """Ingest `build_from` plus the uploaded files into `cfg.kb` (ingest reads their groups from the
    upload folder's access.json)."""
    from kofin.serve.ingest import IngestConfig, main as ingest
    from kofin.serve.uploads import recorded_uploads

    icfg = IngestConfig(output_dir=cfg.kb, inputs=[*cfg.build_from, *recorded_uploads(cfg.upload_dir)], rebuild=rebuild,
                        chunking=cfg.chunking, index=cfg.index, max_file_mb=max(cfg.uploads.max_file_mb, 50.0))
    return ingest(icfg)


def prepare(cfg: ServeConfig) -> Chat:
    """Users, KB (built from `build_from` when missing) and the assistant: everything but the page."""
    users = UserRegistry.load(cfg.users, cfg.users_file)
    if not is_complete(cfg.kb):
        if not cfg.build_from:
            raise KofinError(f"kb {cfg.kb}: no complete knowledge base there; build one with `kofin ingest --kb {cfg.kb} PATHS...` "
                             "or set build_from: [folder of documents] in the serve config")
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


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_plain(markdown: str) -> str:
    """The text a `md_escape`d / `answer_markdown` line shows: escapes undone, bold marks dropped."""
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and i + 1 < len(markdown):
            out.append(markdown[i + 1])
            i += 2
        elif markdown.startswith("**", i):
            i += 2
        else:
            out.append(markdown[i])
            i += 1
    return "".join(out)


def conversation(messages: list | None) -> list[dict]:
    """The Chatbot's messages (the page's Markdown) as plain-text OpenAI chat messages, the last
    few only: what the answer path reads to understand a follow-up."""
    out = []
    for m in messages or []:
        role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (getattr(m, "role", None), getattr(m, "content", None))
        if isinstance(content, list):  # Gradio may hand content back as parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role not in ("user", "assistant") or not isinstance(content, str):
            continue
        lines = [line for line in content.split("\n") if not _DECORATION.match(line)]
        text = md_plain("\n".join(lines)).strip()
        if text and text != "…":
            out.append({"role": role, "content": text[:HISTORY_CHARS]})
    return out[-HISTORY_MESSAGES:]


def answer_markdown(text: str) -> str:
    """Answer text for the chat: document words escaped, bullets and [n] kept readable."""
    out = []
    for line in text.split("\n"):
        bullet = "- " if line.startswith("- ") else ""
        body, pieces, pos = line[len(bullet):], [], 0
        for m in _CITE.finditer(body):
            pieces += [md_escape(body[pos:m.start()]), f"**{md_escape(m.group())}**"]
            pos = m.end()
        pieces.append(md_escape(body[pos:]))
        out.append(bullet + "".join(pieces))
    return "\n".join(out)


def final_markdown(result: AskResult) -> str:
    """The answer as the chat shows it: caveat above; conflicts, unsupported sentences and the
    query that was searched below. Everything but the answer is a `>` or `_` line (see
    `conversation`), and every piece of document or user text is escaped."""
    searched = getattr(result, "rewritten_query", None)
    tail = f"\n\n_검색한 질문: {md_escape(searched)}_" if searched else ""
    if not result.found:
        return f"{NO_ANSWER}\n\n_{NO_ANSWER_HINT}_{tail}"
    parts = []
    caveat = getattr(result, "caveat", None)
    if caveat:
        parts.append(f"> ⚠ {md_escape(caveat)}")
    parts.append(answer_markdown(result.answer))
    conflicts = getattr(result, "conflicts", None) or []
    if conflicts:
        parts.append(conflicts_markdown(conflicts))
    if result.flagged:
        parts.append("> ⚠ 확인 필요: 출처와 맞지 않는 부분이 있을 수 있는 문장 "
                     + ", ".join(f"“{md_escape(f['sentence'][:40])}”" for f in result.flagged))
    return "\n\n".join(parts) + tail


def conflicts_markdown(conflicts: list[dict]) -> str:
    """Each disagreement: what it is about, then every source's value with its title and effective date."""
    lines = [f"> **{SOURCES_DISAGREE_TITLE}**"]
    for c in conflicts:
        lines += [">", f"> {md_escape(str(c.get('subject') or '같은 항목'))}:"]
        for st in c.get("statements") or []:
            value = md_escape(str(st.get("value") or st.get("sentence") or ""))
            title = md_escape(str(st.get("title") or st.get("doc_id") or ""))
            effective = f" (시행 {md_escape(str(st['effective']))})" if st.get("effective") else " (시행일 없음)"
            lines.append(f"> - **{value}** — {title}{effective}")
    return "\n".join(lines)


def _cited_sentences(answer: str, n: int) -> set[str]:
    grams: set[str] = set()
    for line in answer.split("\n"):
        if any(n in [int(x) for x in m.group()[1:-1].split(",")] for m in _CITE.finditer(line)):
            grams |= bigrams(_CITE.sub("", line))
    return grams


def highlighted(text: str, answer: str, n: int) -> tuple[str, str]:
    """(the chunk as HTML with the sentences the answer took from it in <mark>, the first such sentence)."""
    cited = _cited_sentences(answer, n)
    out, pos, first = [], 0, ""
    for sentence in split_sentences(text):
        at = text.find(sentence, pos)
        if at < 0:
            continue
        grams = bigrams(sentence)
        hit = bool(cited and grams) and len(grams & cited) / len(grams) >= 0.6
        out.append(html.escape(text[pos:at]))
        out.append(f"<mark>{html.escape(sentence)}</mark>" if hit else html.escape(sentence))
        first = first or (_BULLET.sub("", sentence) if hit else "")
        pos = at + len(sentence)
    out.append(html.escape(text[pos:]))
    return "".join(out), first


def sources_html(result: AskResult | None) -> str:
    if result is None or not result.found or not result.sources:
        return '<div class="kofin-sources kofin-empty">표시할 출처가 없습니다.</div>'
    cited = [s for n in result.cited for s in result.sources if s["n"] == n]
    rest = [s for s in result.sources if not s["cited"]]
    parts = ['<div class="kofin-sources">', f"<h3>인용된 출처 {len(cited)}건</h3>"]
    parts += [_source_block(s, result.answer, True) for s in cited]
    if rest:
        parts.append(f"<h4>함께 검색된 자료 {len(rest)}건 (인용 안 됨)</h4>")
        parts += [_source_block(s, result.answer, False) for s in rest]
    parts.append("</div>")
    return "\n".join(parts)


def _source_block(s: dict, answer: str, cited: bool) -> str:
    body, first = highlighted(s["text"], answer, s["n"]) if cited else (html.escape(s["text"]), "")
    page = f" · {int(s['page'])}쪽" if s.get("page") else ""
    section = f" · {html.escape(s['section'])}" if s.get("section") else ""
    snippet = f'<div class="kofin-snippet">“{html.escape(first)}”</div>' if first else ""
    # Sentences that address an assistant or claim to override other text: never part of an
    # answer; shown, flagged, so staff can report the document.
    warn = "".join(f'<div class="kofin-suspicious">{SUSPICIOUS_NOTE}: “{html.escape(str(line))}”</div>'
                   for line in s.get("suspicious") or [])
    kind = "kofin-cited" if cited else "kofin-uncited"
    return (f'<details class="kofin-source {kind}" data-n="{s["n"]}"><summary><span class="kofin-n">[{s["n"]}]</span> '
            f'<b class="kofin-title">{html.escape(s["title"])}</b>{section}{page}{snippet}{warn}</summary>'
            f'<div class="kofin-doc">{html.escape(s["id"])}</div><div class="kofin-text">{body}</div></details>')
