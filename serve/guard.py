"""The chat's front door: login, logout, sessions and the checks Gradio's routes do not make.

Run as: a library; `kofin.serve.app` installs `SessionGuard` as ASGI middleware of the chat and
gives Gradio `auth_dependency=session_user`, so Gradio asks the guard who is logged in.

- `/login` is kofin's (a Korean page, kofin.serve.login_page; `POST /login` takes the same form
  fields the Gradio client sends) and checks throttling, lockout and the password or directory
  through kofin.serve.sessions. The session cookie (`kofin-session`, HttpOnly, SameSite=Strict)
  names a session in the store; every request is checked against it there, so idle and absolute
  expiry, logout and a session made on another replica hold on every route. An expired session
  gets "세션이 만료되었습니다" (the page redirects to the login page; API calls get 401). The open
  tab's heartbeat is often the request that finds the expiry: its 401 leaves `ENDED` in the cookie
  so that the page's next load still says why the user is at the login page.
- Logout is `POST /logout` (a GET cannot log anyone out, so a link or image elsewhere cannot either).
- Trusted-header SSO (`sso:`): a request from one of `sso.proxies` carrying `sso.user_header`
  signs that user on; the header from any other address is ignored.
- Gradio leaves `/gradio_api/cancel`, `/heartbeat/*` and `/stream/*` open: they need a login.
  `/gradio_api/upload` is for admins only. Deep links (a snapshot of any session's chat) are gone.
- Gradio's CORS middleware trusts any Origin when the Host is not localhost, with credentials: a
  request whose Origin is not the app's own host is refused, `Origin: null` too (what a sandboxed
  iframe, a `data:` page or a redirect chain sends: never the chat's own page).
- Gradio serves any Host header, so a DNS-rebinding page (evil.example resolving to the bank's
  address) would be same-origin with the chat: a Host that is not one of the configured
  `server_names` (or the bound address) is refused.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from kofin.serve.login_page import EXPIRED, NOTICES, login_page

SESSION_ROUTES = ("/gradio_api/cancel", "/gradio_api/heartbeat", "/gradio_api/stream")
ADMIN_ROUTES = ("/gradio_api/upload",)
COOKIE = "kofin-session"
USER_KEY = "kofin.user"  # where the guard leaves the session's user in the ASGI scope
PAGES = ("/", "")
ENDED = "ended"  # the cookie's value after an expiry, until a page has said so (never a token: those are 43 chars)
MAX_FORM_BYTES = 8192


def session_user(request) -> str | None:
    """Gradio's `auth_dependency`: the user the guard found for this request (None: not logged in)."""
    return request.scope.get(USER_KEY)


class SessionGuard:
    def __init__(self, app, users, server_names=(), sessions=None, title: str = "", sso=None, proxies=()):
        self.app = app
        self.users = users  # kofin.serve.users.UserRegistry
        self.server_names = {n.lower() for n in server_names}
        self.sessions = sessions  # kofin.serve.sessions.Sessions
        self.title = title
        self.sso = sso  # kofin.serve.ldap_login.SsoConfig | None
        self.proxies = set(proxies) | set(sso.proxies if sso else ())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if "deep_link" in path or b"deep_link=" in scope.get("query_string", b""):
            return await _respond(send, 404, {"detail": "not found"})
        host = headers.get("host", "")
        if self.server_names and host_name(host) not in self.server_names:
            return await _respond(
                send,
                421,
                {"detail": f"this server does not answer as {host!r} (server_names); use its configured address"},
            )
        origin = headers.get("origin")
        if origin is not None and (origin.strip().lower() == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return await _respond(send, 403, {"detail": "cross-origin requests are not accepted"})
        address = self.client_address(scope, headers)
        browser = "text/html" in headers.get("accept", "")
        token = _cookie(headers, COOKIE)
        if path.rstrip("/") == "/login":
            return await self._login(scope, receive, send, method, browser, address)
        if path.rstrip("/") == "/logout":
            return await self._logout(send, method, browser, token, address)

        set_cookie = None
        resolved = self.sessions.resolve(token, activity=not path.startswith("/gradio_api/heartbeat"))
        if browser and method == "GET" and (resolved.expired or token == ENDED):
            # Said once, on the page, even behind SSO (whose next request then signs on afresh).
            return await _redirect(send, "/login?m=expired", self._cookie_header(""))
        if resolved.expired:
            return await _respond(send, 401, {"detail": f"Not authenticated: {EXPIRED}"}, self._cookie_header(ENDED))
        sso_user = self._sso_user(scope, headers)
        if sso_user is not None and (resolved.row is None or resolved.row.user != sso_user.name):
            token = self.sessions.start(sso_user, address)
            resolved = self.sessions.resolve(token)
            set_cookie = self._cookie_header(token)
        user = resolved.row.user if resolved.row else None
        scope[USER_KEY] = user
        if user is None and path in PAGES and method == "GET":
            return await _redirect(send, "/login")
        if path.startswith(SESSION_ROUTES + ADMIN_ROUTES):
            known = self.users.get(user)
            if known is None:
                return await _respond(send, 401, {"detail": "Not authenticated"})
            if path.startswith(ADMIN_ROUTES) and not known.admin:
                return await _respond(send, 403, {"detail": "only administrators upload documents"})
        if set_cookie is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(
                    message, headers=[*message.get("headers", []), (b"set-cookie", set_cookie.encode("latin-1"))]
                )
            await send(message)

        return await self.app(scope, receive, send_with_cookie)

    # ------------------------------------------------------------ login and logout

    async def _login(self, scope, receive, send, method: str, browser: bool, address: str):
        sso_only = bool(self.sso and self.sso.only)
        if method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            notice = NOTICES.get((query.get("m") or [""])[0], "")
            return await _html(send, 200, login_page(self.title, notice, error=False, sso_only=sso_only))
        if method != "POST" or sso_only:
            return await _respond(send, 405, {"detail": "log in with POST /login (username, password)"})
        body = await _read_body(receive)
        if body is None:
            return await _respond(send, 413, {"detail": "login form too large"})
        form = parse_qs(body.decode("utf-8", "replace"))
        outcome = await self.sessions.login(
            (form.get("username") or [""])[0], (form.get("password") or [""])[0], address
        )
        if outcome.token is None:
            if browser:  # the page again, both fields empty, with what happened
                return await _html(send, outcome.status, login_page(self.title, outcome.message))
            return await _respond(send, outcome.status, {"detail": outcome.message})
        cookie = self._cookie_header(outcome.token)
        if browser:
            return await _redirect(send, "/", cookie)
        return await _respond(send, 200, {"success": True}, cookie)

    async def _logout(self, send, method: str, browser: bool, token: str | None, address: str):
        if method != "POST":
            return await _respond(send, 405, {"detail": "log out with POST /logout"})
        self.sessions.logout(token, address)
        if browser:
            return await _redirect(send, "/login?m=logout", self._cookie_header(""))
        return await _respond(send, 200, {"success": True}, self._cookie_header(""))

    def _cookie_header(self, token: str) -> str:
        cfg = self.sessions.cfg
        age = int(cfg.absolute_hours * 3600) if token else 0  # "": the browser drops the cookie
        return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}" + (
            "; Secure" if cfg.cookie_secure else ""
        )

    # ------------------------------------------------------------ the bank's proxy

    def client_address(self, scope, headers) -> str:
        """The client's address; behind a trusted proxy, the last hop it added to X-Forwarded-For."""
        peer = (scope.get("client") or ("", 0))[0]
        forwarded = headers.get("x-forwarded-for")
        if peer in self.proxies and forwarded:
            return forwarded.split(",")[-1].strip() or peer
        return peer

    def _sso_user(self, scope, headers):
        if self.sso is None:
            return None
        name = headers.get(self.sso.user_header.lower(), "").strip()
        peer = (scope.get("client") or ("", 0))[0]
        if not name or peer not in self.sso.proxies:
            return None  # the header from anywhere but the proxy is anyone's to forge
        return self.sso.user_for(name, headers.get(self.sso.groups_header.lower(), ""), self.sessions)


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:7860` -> `::1`, `Chat.Bank.Local:443` -> `chat.bank.local`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cookie(headers: dict, name: str) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - http.cookies raises CookieError on junk; a junk cookie is no session
        return None
    return cookies[name].value if name in cookies and cookies[name].value else None


async def _read_body(receive) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            return None
        if not message.get("more_body"):
            return body


async def _send(send, status: int, body: bytes, content_type: bytes, extra: list | None = None) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond(send, status: int, payload: dict, cookie: str | None = None) -> None:
    extra = [(b"set-cookie", cookie.encode("latin-1"))] if cookie is not None else []
    await _send(send, status, json.dumps(payload, ensure_ascii=False).encode(), b"application/json", extra)


async def _html(send, status: int, page: str) -> None:
    await _send(send, status, page.encode("utf-8"), b"text/html; charset=utf-8")


async def _redirect(send, location: str, cookie: str | None = None) -> None:
    extra = [(b"location", location.encode("latin-1"))] + (
        [(b"set-cookie", cookie.encode("latin-1"))] if cookie is not None else []
    )
    await _send(send, 303, b"", b"text/plain", extra)
