"""A guard in front of Gradio's routes for what Gradio's own login does not cover.

Run as: a library; `kofin.serve.app` installs `SessionGuard` as ASGI middleware of the chat.

Gradio's `auth=` protects the routes that return content, but leaves some open or too wide for a
bank's chat (found by review against gradio 6.31's routes.py):
- `/gradio_api/cancel`, `/heartbeat/*` and `/stream/*` act on a session or event by its id with
  no login: the guard requires one.
- `/gradio_api/upload` lets every logged-in user put files on the server's disk: only admins
  upload documents, so only admins may use it.
- deep links (`/gradio_api/deep_link?session_hash=…`, `/?deep_link=…`) snapshot any session's
  chat for any logged-in user who knows its id: the chat has no use for them, so they are gone.
- Gradio's CORS middleware trusts any Origin when the Host is not localhost, with credentials:
  behind HTTPS on a bank address, another site could read answers with a staff member's
  session. A request whose Origin is not the app's own host is refused, and so is `Origin: null`
  (what a sandboxed iframe, a `data:` page or a redirect chain sends: never the chat's own page).
- Gradio serves any Host header, so a DNS-rebinding page (evil.example resolving to the bank's
  address) would be same-origin with the chat: a Host that is not one of the configured
  `server_names` (or the bound address) is refused.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

SESSION_ROUTES = ("/gradio_api/cancel", "/gradio_api/heartbeat", "/gradio_api/stream")
ADMIN_ROUTES = ("/gradio_api/upload",)


class SessionGuard:
    def __init__(self, app, users, server_names: list[str] | tuple[str, ...] = ()):
        self.app = app
        self.users = users  # kofin.serve.users.UserRegistry
        self.server_names = {n.lower() for n in server_names}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if "deep_link" in path or b"deep_link=" in scope.get("query_string", b""):
            return await _refuse(send, 404, "not found")
        host = headers.get("host", "")
        if self.server_names and host_name(host) not in self.server_names:
            return await _refuse(send, 421, f"this server does not answer as {host!r} (server_names); use its configured address")
        origin = headers.get("origin")
        if origin is not None and (origin.strip().lower() == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return await _refuse(send, 403, "cross-origin requests are not accepted")
        if path.startswith(SESSION_ROUTES + ADMIN_ROUTES):
            user = self.users.get(_username(scope, headers))
            if user is None:
                return await _refuse(send, 401, "Not authenticated")
            if path.startswith(ADMIN_ROUTES) and not user.admin:
                return await _refuse(send, 403, "only administrators upload documents")
        return await self.app(scope, receive, send)


def host_name(host: str) -> str:
    """The name part of a Host header: `[::1]:7860` -> `::1`, `Chat.Bank.Local:443` -> `chat.bank.local`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _username(scope, headers) -> str | None:
    """The logged-in user, read the way Gradio reads it (its login cookie -> its token table)."""
    gradio_app = scope.get("app")
    tokens, cookie_id = getattr(gradio_app, "tokens", None), getattr(gradio_app, "cookie_id", None)
    if tokens is None or cookie_id is None:
        return None
    cookies = SimpleCookie()
    cookies.load(headers.get("cookie", ""))
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies and cookies[name].value in tokens:
            return tokens[cookies[name].value]
    return None


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
