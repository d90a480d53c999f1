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
  session. A request whose Origin is not the app's own host is refused.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

SESSION_ROUTES = ("/gradio_api/cancel", "/gradio_api/heartbeat", "/gradio_api/stream")
ADMIN_ROUTES = ("/gradio_api/upload",)


class SessionGuard:
    def __init__(self, app, users):
        self.app = app
        self.users = users  # kofin.serve.users.UserRegistry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if "deep_link" in path or b"deep_link=" in scope.get("query_string", b""):
            return await _refuse(send, 404, "not found")
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            return await _refuse(send, 403, "cross-origin requests are not accepted")
        if path.startswith(SESSION_ROUTES + ADMIN_ROUTES):
            user = self.users.get(_username(scope, headers))
            if user is None:
                return await _refuse(send, 401, "Not authenticated")
            if path.startswith(ADMIN_ROUTES) and not user.admin:
                return await _refuse(send, 403, "only administrators upload documents")
        return await self.app(scope, receive, send)


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
