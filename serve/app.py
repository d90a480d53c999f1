"""`kofin serve`: the Gradio chat for bank staff.

Run as:
    kofin serve --config configs/serve/demo.yaml [server_port=7861 ...]

One page, in Korean: log in (kofin's login page: YAML users with salted scrypt hashes, the bank's
LDAP directory, or its SSO proxy; sessions expire, failed logins lock), ask, watch the cited
answer stream in, open each cited passage in the sources panel. Admins get a second tab to upload
documents into the knowledge base with access groups, re-index, see statements the documents
disagree on, and unlock locked accounts. Every answer and every login event is appended to the
hash-chained audit log (a file, or PostgreSQL when several replicas share state).

Offline and closed by construction: no `share`, the configured address only (127.0.0.1 by
default), Gradio analytics off (kofin.offline), no run history, MCP, monitoring or server-side
rendering, system fonts only (no Google Fonts), and every Gradio route that runs or describes
an event (API info, config, queue, /call, uploads, files) needs the login cookie.
"""

# No `from __future__ import annotations`: Gradio finds the `gr.Request` parameter of a handler
# by its real annotation object, and a string annotation would hide it (the user would be None).
import logging
import os
import socket
from pathlib import Path

from kofin.errors import KofinError
from kofin.offline import apply_offline_env
from kofin.serve.audit import AuditTampered, check_appendable
from kofin.serve.chat import AccessDenied, Chat, prepare
from kofin.serve.render import conversation, md_escape, sources_html
from kofin.serve.serve_config import ServeConfig
from kofin.serve.sessions import Sessions

FONTS = ["Pretendard", "Noto Sans KR", "Noto Sans CJK KR", "Malgun Gothic", "Apple SD Gothic Neo", "sans-serif"]
MONO = ["D2Coding", "Noto Sans Mono CJK KR", "monospace"]
CSS = """
.kofin-sources details {
  border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px 10px; margin: 6px 0;
}
.kofin-sources summary { cursor: pointer; }
.kofin-n { font-weight: 700; color: var(--color-accent); }
.kofin-snippet { font-size: 0.9em; opacity: 0.85; margin-top: 4px; }
.kofin-doc { font-size: 0.8em; opacity: 0.6; margin: 4px 0; }
.kofin-text { white-space: pre-wrap; font-size: 0.92em; }
.kofin-text mark { background: #fff2a8; }
.kofin-suspicious { color: #b42318; font-size: 0.85em; margin-top: 4px; }
#kofin-user form { display: inline; margin: 0; }
#kofin-user button {
  background: none; border: 0; padding: 0; color: var(--link-text-color, #1f5fbf);
  text-decoration: underline; cursor: pointer; font: inherit;
}
#kofin-chat { height: min(460px, calc(100vh - 390px)) !important; min-height: 240px; }
@media (max-width: 640px) {
  /* A phone stacks the columns: a short answer box keeps the sources near the answer. */
  #kofin-chat { height: 48vh !important; min-height: 200px; }
  #kofin-examples { display: none; }
}
"""
# An open page whose session ran out (idle, absolute, or logged out elsewhere) gets 401 from the next
# call; instead of Gradio's generic error it goes to the login page that says the session expired.
EXPIRED_REDIRECT_JS = """() => {
  const fetchWithSession = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetchWithSession(...args);
    if (response.status === 401) {
      const text = await response.clone().text().catch(() => "");
      if (text.includes("세션이 만료되었습니다") || text.includes("Not authenticated")) {
        window.location.assign("/login?m=expired");
      }
    }
    return response;
  };
}"""
log = logging.getLogger("kofin.serve")
LOGOUT_FORM = '<form method="post" action="/logout"><button type="submit" id="kofin-logout">로그아웃</button></form>'


def build_app(chat: Chat, sessions: Sessions):
    import html

    apply_offline_env()  # GRADIO_ANALYTICS_ENABLED=False before gradio is imported
    import gradio as gr  # imported as a module (not returned by a helper): `gr.Request` below is a type

    def whoami(request: gr.Request):
        user = chat.users.get(request.username if request else None)
        if user is None:
            return "로그인이 필요합니다.", gr.update(visible=False)
        groups = ", ".join(user.groups) or "(공개 문서만)"
        role = " · 관리자" if user.admin else ""
        return (
            f"<b>{html.escape(user.name)}</b> 님{role} · 열람 그룹: {html.escape(groups)} · {LOGOUT_FORM}",
            gr.update(visible=user.admin),
        )

    def respond(message: str, history: list, request: gr.Request):
        history = list(history or [])
        if not (message or "").strip():
            yield history, message, gr.skip()
            return
        # The conversation so far, as text, helps read a follow-up ("그럼 중도해지하면요?"); it is
        # the page's copy, so it only ever rewrites the query: the groups come from the session.
        earlier = conversation(history)
        try:
            check_appendable(chat.cfg.audit_path)  # an answer the audit log cannot record is not given
        except AuditTampered:
            raise gr.Error(
                "답변하지 못했습니다: 감사 로그가 손상되어 기록할 수 없습니다. 관리자에게 알려 주세요."
            ) from None
        history += [{"role": "user", "content": md_escape(message)}, {"role": "assistant", "content": "…"}]
        yield history, "", '<div class="kofin-sources kofin-empty">답변을 찾는 중입니다…</div>'
        final = None
        try:
            for text, final in chat.answer(message, request.username if request else None, history=earlier):
                history[-1] = {"role": "assistant", "content": text}
                yield history, "", sources_html(final) if final is not None else gr.skip()
            if final is None:  # refused before answering (too long): no sources to wait for
                yield history, "", sources_html(None)
        except AccessDenied as err:
            raise gr.Error(str(err)) from None
        except KofinError as err:
            raise gr.Error(f"답변하지 못했습니다: {err}") from None
        except Exception as err:  # noqa: BLE001 - Gradio (show_error=False) would show a bare "Error"
            log.exception("answering a chat question failed")
            raise gr.Error(
                f"답변하지 못했습니다: 내부 오류({type(err).__name__})입니다. 관리자에게 알려 주세요."
            ) from None

    def listing_for(request: gr.Request):
        # The page loads this for everyone; only an admin may learn which documents exist for whom.
        return chat.uploaded_for(request.username if request else None)

    def upload(files: list | None, groups: list[str], request: gr.Request):
        pairs = [(Path(f), Path(f).name) for f in files or []]
        try:
            status = chat.upload(pairs, groups or [], request.username if request else None)
        except AccessDenied as err:
            raise gr.Error(str(err)) from None
        except KofinError as err:
            status = f"색인하지 못했습니다: {err}"
        finally:
            # Gradio's staged copy would otherwise outlive the upload, outside the KB's groups.
            for staged, _ in pairs:
                staged.unlink(missing_ok=True)
        return status, chat.uploaded(), None

    def admin_view(request: gr.Request):
        # Locked accounts and the KB's conflicting statements name users and documents of every group.
        user = chat.users.get(request.username if request else None)
        if user is None or not user.admin:
            return "", ""
        return locked_listing(sessions), conflicts_listing(chat)

    def unlock(name: str, request: gr.Request):
        try:
            admin = chat.require_admin(request.username if request else None)
        except AccessDenied as err:
            raise gr.Error(str(err)) from None
        name = (name or "").strip()
        done = sessions.unlock(name, by=admin.name) if name else False
        status = f"잠금 해제: {md_escape(name)}" if done else f"잠긴 계정이 아닙니다: {md_escape(name)}"
        return status, locked_listing(sessions), ""

    def reindex(request: gr.Request):
        try:
            status = chat.reindex(request.username if request else None)
        except AccessDenied as err:
            raise gr.Error(str(err)) from None
        except KofinError as err:
            status = f"색인하지 못했습니다: {err}"
        return status, chat.uploaded(), conflicts_listing(chat)

    # delete_cache: Gradio's staged files (uploads, cached outputs) older than 10 min, every 10 min.
    with gr.Blocks(title=chat.cfg.title, analytics_enabled=False, delete_cache=(600, 600)) as demo:
        with gr.Row():
            gr.Markdown(f"## {chat.cfg.title}")
            who = gr.HTML(elem_id="kofin-user")
        gr.Markdown(chat.backend_notice(), elem_id="kofin-backend")
        with gr.Tabs():
            with gr.Tab("질문하기", id="chat"):
                with gr.Row():
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(
                            label="답변",
                            elem_id="kofin-chat",
                            height=460,
                            buttons=["copy"],
                            latex_delimiters=[],
                            feedback_options=None,
                            allow_file_downloads=False,
                        )
                        box = gr.Textbox(
                            label="질문",
                            placeholder="예: 정기예금을 만기 전에 해지하면 이자는?",
                            elem_id="kofin-question",
                            lines=2,
                        )
                        send = gr.Button("질문하기", variant="primary", elem_id="kofin-send")
                        with gr.Column(elem_id="kofin-examples"):
                            gr.Examples(examples=[[q] for q in chat.cfg.examples], inputs=[box], label="예시 질문")
                    with gr.Column(scale=2):
                        sources = gr.HTML(
                            '<div class="kofin-sources kofin-empty">질문하면 인용된 출처가 여기에 표시됩니다.</div>',
                            label="출처",
                            elem_id="kofin-sources",
                        )
            with gr.Tab("문서 관리", id="admin", visible=False) as admin_tab:
                gr.Markdown(
                    "문서를 올리면 지식베이스에 바로 색인됩니다. "
                    f"허용 형식: {', '.join(chat.cfg.uploads.types)} · 최대 {chat.cfg.uploads.max_file_mb:g} MB"
                )
                files = gr.File(
                    label="문서",
                    file_count="multiple",
                    type="filepath",
                    file_types=list(chat.cfg.uploads.types),
                    elem_id="kofin-upload",
                )
                groups = gr.CheckboxGroup(
                    choices=list(chat.cfg.uploads.groups), label="열람 그룹", elem_id="kofin-groups"
                )
                with gr.Row():
                    upload_btn = gr.Button("올리고 색인하기", variant="primary", elem_id="kofin-upload-btn")
                    reindex_btn = gr.Button("전체 다시 색인", elem_id="kofin-reindex")
                status = gr.Markdown(elem_id="kofin-admin-status")
                listing = gr.Markdown(elem_id="kofin-uploaded")
                gr.Markdown("### 문서 간 내용이 다른 곳")
                conflicts = gr.Markdown(elem_id="kofin-conflicts")
                gr.Markdown("### 잠긴 계정")
                locked = gr.Markdown(elem_id="kofin-locked")
                with gr.Row():
                    unlock_name = gr.Textbox(label="잠금 해제할 아이디", elem_id="kofin-unlock-name", scale=3)
                    unlock_btn = gr.Button("잠금 해제", elem_id="kofin-unlock", scale=1)
                unlock_status = gr.Markdown(elem_id="kofin-unlock-status")

        demo.load(whoami, outputs=[who, admin_tab], api_visibility="private")
        # "undocumented": callable by logged-in clients, but not described in the API schema that
        # Gradio also embeds in the (anonymous) login page.
        send.click(respond, [box, chatbot], [chatbot, box, sources], api_name="ask", api_visibility="undocumented")
        box.submit(respond, [box, chatbot], [chatbot, box, sources], api_visibility="private")
        upload_btn.click(
            upload, [files, groups], [status, listing, files], api_name="upload", api_visibility="undocumented"
        )
        reindex_btn.click(
            reindex, None, [status, listing, conflicts], api_name="reindex", api_visibility="undocumented"
        )
        unlock_btn.click(
            unlock,
            [unlock_name],
            [unlock_status, locked, unlock_name],
            api_name="unlock",
            api_visibility="undocumented",
        )
        demo.load(listing_for, outputs=[listing], api_visibility="private")
        demo.load(admin_view, outputs=[locked, conflicts], api_visibility="private")
    demo.queue(default_concurrency_limit=chat.cfg.concurrency_limit, max_size=chat.cfg.queue_size, api_open=False)
    return demo


def locked_listing(sessions: Sessions) -> str:
    from datetime import datetime, timezone

    from kofin.serve.sessions import NEVER

    locks = sessions.lockouts()
    if not locks:
        return "잠긴 계정이 없습니다."

    def until(t: float) -> str:
        return (
            "관리자 해제 시까지"
            if t >= NEVER
            else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC까지")
        )

    return "\n".join(f"- {md_escape(name)} — {until(t)}" for name, t in locks.items())


def conflicts_listing(chat: Chat) -> str:
    """The KB's conflicting statements (written by `kofin ingest` as conflicts.json), for admins."""
    from kofin.serve.conflicts import describe, read_conflicts

    try:
        found = read_conflicts(chat.cfg.kb)
    except (KofinError, OSError, ValueError) as err:
        return f"충돌 목록을 읽지 못했습니다: {md_escape(str(err))}"
    if not found:
        return "문서 간에 서로 다른 값은 없습니다."
    return f"{len(found)}건 (어느 쪽이 맞는지 확인하세요):\n" + "\n".join(f"- {md_escape(describe(c))}" for c in found)


def open_sessions(chat: Chat, clock=None) -> Sessions:
    """The store the config names, with the login/session rules; the audit chain goes to the store
    when it keeps one (PostgreSQL), and directory users are looked up there."""
    import time

    from kofin.serve.audit import route_audit
    from kofin.serve.ldap_login import Directory
    from kofin.serve.store import open_store

    cfg = chat.cfg
    store = open_store(cfg.store.kind, path=cfg.store_path, dsn=cfg.store.dsn)
    sink = store.audit_sink()
    if sink is not None:
        route_audit(cfg.audit_path, sink)
    if store.shares_uploads():
        from kofin.serve.uploads import share_uploads, sync_from_store

        share_uploads(cfg.upload_dir, store)
        if sync_from_store(cfg.upload_dir, store):  # uploads made on other replicas since this one's KB was built
            chat.ingest(rebuild=False)
    chat.users.directory = store.directory_user
    directory = Directory(cfg.directory) if cfg.directory else None
    return Sessions(store, chat.users, cfg.audit_path, cfg.sessions, cfg.login, directory, clock or time.time)


def launch_options(chat: Chat, sessions: Sessions) -> dict:
    from starlette.middleware import Middleware

    from kofin.serve.guard import SessionGuard, session_user

    apply_offline_env()
    import gradio as gr

    theme = gr.themes.Default(font=FONTS, font_mono=MONO)
    guard = Middleware(
        SessionGuard,
        users=chat.users,
        server_names=chat.cfg.allowed_hosts(),
        sessions=sessions,
        title=chat.cfg.title,
        sso=chat.cfg.sso,
        proxies=chat.cfg.trusted_proxies,
    )
    return dict(
        auth_dependency=session_user,
        share=False,
        server_name=chat.cfg.server_name,
        server_port=chat.cfg.server_port,
        show_error=False,
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
        max_file_size=int(chat.cfg.uploads.max_file_mb * 2**20),
        theme=theme,
        css=CSS,
        allowed_paths=[],
        quiet=True,
        inbrowser=False,
        js=EXPIRED_REDIRECT_JS,
        app_kwargs={"middleware": [guard]},
    )


def check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as uvicorn: a closed server's TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as err:
            raise KofinError(
                f"server_port {port} on {host} is not free ({err.strerror}); "
                "stop the other server or set server_port=<another port>"
            ) from None


def start(chat: Chat, block: bool = True, sessions: Sessions | None = None):
    """Launch the page; with block=False returns the Gradio app and serves from a thread (tests,
    benchmarks). `sessions`: an `open_sessions(chat, clock)` of the caller's (tests move time)."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(chat.cfg.output_dir / "gradio-tmp"))  # uploads staged in the serve dir
    check_port(chat.cfg.server_name, chat.cfg.server_port)
    sessions = sessions or open_sessions(chat)
    demo = build_app(chat, sessions)
    demo.launch(prevent_thread_lock=not block, **launch_options(chat, sessions))
    return demo


def main(cfg: ServeConfig) -> None:
    check_port(cfg.server_name, cfg.server_port)  # before the KB build: say it at once
    chat = prepare(cfg)
    sessions = open_sessions(chat)
    print(f"kofin serve: {chat.describe()}")
    where = sessions.store.describe()
    print(
        f"kofin serve: state in {where}; sessions end after {cfg.sessions.idle_minutes:g} min idle "
        f"or {cfg.sessions.absolute_hours:g} h; {cfg.login.max_failures} failed logins lock a name",
        flush=True,
    )
    print(f"kofin serve: http://{cfg.server_name}:{cfg.server_port}  (Ctrl+C to stop)", flush=True)
    start(chat, block=True, sessions=sessions)
