"""The chat's login page: Korean, named after the app, no script, no outside request.

Run as: a library; serve/guard.py answers `GET /login` (and a failed `POST /login`) with it.

Gradio's own login form is English, has an empty title and keeps the name after a failed login;
kofin serves its own page instead, a plain HTML form that posts to /login (the same route the
Gradio client uses). A failed login clears both fields; the message says what happened (wrong
name or password, locked, throttled, expired, logged out) without telling which names exist.
"""

from __future__ import annotations

import html

EXPIRED = "세션이 만료되었습니다. 다시 로그인하세요."
LOGGED_OUT = "로그아웃되었습니다."
NOTICES = {"expired": EXPIRED, "logout": LOGGED_OUT}

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center; background: #f3f5f8;
       font-family: Pretendard, "Noto Sans KR", "Noto Sans CJK KR", "Malgun Gothic", "Apple SD Gothic Neo", sans-serif;
       color: #1d2433; }
main { width: min(400px, calc(100vw - 32px)); background: #fff; border: 1px solid #d8dee8; border-radius: 10px;
       padding: 28px 24px; }
h1 { font-size: 1.35rem; margin: 0 0 4px; }
p.sub { margin: 0 0 20px; color: #5a6475; font-size: 0.92rem; }
label { display: block; font-size: 0.9rem; margin: 14px 0 6px; }
input { width: 100%; font-size: 1rem; padding: 10px 12px; border: 1px solid #b9c2d0; border-radius: 6px; }
button { width: 100%; margin-top: 20px; font-size: 1rem; padding: 11px; border: 0; border-radius: 6px;
         background: #1f5fbf; color: #fff; cursor: pointer; }
.msg { padding: 10px 12px; border-radius: 6px; margin-bottom: 8px; font-size: 0.92rem; }
.error { background: #fdecec; color: #9b1c1c; }
.notice { background: #eaf2fd; color: #1b4b91; }
"""


def login_page(title: str, message: str = "", *, error: bool = True, sso_only: bool = False) -> str:
    box = ""
    if message:
        kind = "error" if error else "notice"
        box = f'<div class="msg {kind}" role="alert" id="kofin-login-message">{html.escape(message)}</div>'
    form = (
        "<p>이 서버는 은행 통합인증(SSO)으로만 로그인합니다. 사내 포털에서 다시 접속하세요.</p>"
        if sso_only
        else '<form method="post" action="/login" autocomplete="off">'
        '<label for="kofin-username">아이디</label>'
        '<input id="kofin-username" type="text" name="username" value="" autocomplete="username" autofocus required>'
        '<label for="kofin-password">비밀번호</label>'
        '<input id="kofin-password" type="password" name="password" value="" autocomplete="current-password" required>'
        '<button type="submit">로그인</button></form>'
    )
    name = html.escape(title)
    return (
        f'<!doctype html><html lang="ko"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name} — 로그인</title><style>{_CSS}</style></head>"
        f'<body><main><h1>{name}</h1><p class="sub">직원 계정으로 로그인하세요.</p>{box}{form}</main></body></html>'
    )
