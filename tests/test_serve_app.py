"""The running chat server: login on every API route, access control through chat / sources / API,
streaming, the audit log, and what Gradio's login leaves open. (Users, config and the serve CLI are
test_serve_config.py; the browser tests test_serve_browser.py; uploads test_serve_uploads.py.)"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from serve_fixtures import (
    OPEN_QUESTION,
    PASSWORDS,
    RESTRICTED_DOC,
    RESTRICTED_QUESTION,
    demo_config,
    restricted_sentences,
    running_app,
)


@pytest.fixture(scope="module")
def app(bundled_kb, tmp_path_factory):
    cfg = demo_config(bundled_kb, tmp_path_factory.mktemp("serve") / "serve")
    with running_app(cfg) as (chat, url):
        yield chat, url


def _client(url: str, user: str):
    from gradio_client import Client

    return Client(url + "/", auth=(user, PASSWORDS[user]), verbose=False)


def _answer_text(history: list) -> str:
    content = history[-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def _http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


# ---------------------------------------------------------------- login


PROTECTED = [
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("GET", "/gradio_api/openapi.json"),
    ("GET", "/gradio_api/queue/data?session_hash=abc"),
    ("GET", "/gradio_api/upload_progress?upload_id=x"),
    ("GET", "/gradio_api/file=/etc/passwd"),
    ("GET", "/gradio_api/call/ask/xyz"),
    ("POST", "/gradio_api/queue/join"),
    ("POST", "/gradio_api/call/ask"),
    ("POST", "/gradio_api/call/upload"),
    ("POST", "/gradio_api/call/reindex"),
    ("POST", "/gradio_api/run/ask"),
    ("POST", "/gradio_api/api/ask"),
    ("POST", "/gradio_api/upload"),
]


@pytest.mark.parametrize("method,path", PROTECTED, ids=[p for _, p in PROTECTED])
def test_api_routes_refuse_anonymous_requests(app, method, path):
    _, url = app
    body = {"data": [RESTRICTED_QUESTION, []], "fn_index": 0, "session_hash": "abc"} if method == "POST" else None
    status, text = _http(url + path, method, body)
    assert status in (401, 403), f"{method} {path} answered {status} without login: {text[:200]}"
    assert "STR" not in text and "Not authenticated" in text


def test_wrong_password_gets_no_session(app):
    from gradio_client import Client

    _, url = app
    with pytest.raises(Exception, match="(?i)login|auth|401|credentials"):
        Client(url + "/", auth=("teller", "wrong-password"), verbose=False)
    req = urllib.request.Request(
        url + "/login",
        data=b"username=teller&password=wrong",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code in (400, 401) and "kofin-session=" not in str(err.value.headers.get("set-cookie"))
    req = urllib.request.Request(
        url + "/login",
        data=b"username=teller&password=teller-demo-1",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        cookie = r.headers.get("set-cookie", "")
        assert r.status == 200 and "kofin-session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_login_then_api_answers_with_citations_and_streams(app):
    chat, url = app
    client = _client(url, "teller")
    job = client.submit(OPEN_QUESTION, [], api_name="/ask")
    updates = [out for out in job]
    history, box, sources = job.result()
    text = _answer_text(history)
    assert re.search(r"\\?\[1\\?\]", text) and "중도해지이율" in text
    assert len(updates) >= 3, "the answer should arrive in several streamed updates"
    assert box == "" and "kofin-cited" in sources and "<mark>" in sources and "garam-smart-term-deposit" in sources


def _audit_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def _answers(path) -> list[dict]:
    return [r for r in _audit_rows(path) if "event" not in r]  # login events share the chain


def test_audit_log_records_chat_answers_and_stays_verifiable(app):
    from kofin.serve.audit import verify_audit

    chat, url = app
    before = len(_audit_rows(chat.cfg.audit_path))
    _client(url, "compliance").predict("주민번호 900101-1234567 고객의 " + RESTRICTED_QUESTION, [], api_name="/ask")
    check = verify_audit(chat.cfg.audit_path)
    rows = _audit_rows(chat.cfg.audit_path)[before:]
    assert check.ok and [r.get("event") for r in rows] == ["login", None]  # the client's login, then its answer
    assert rows[0]["outcome"] == "success" and rows[0]["user"] == "compliance" and rows[0]["source"] == "password"
    last = rows[-1]
    assert last["user"] == "compliance" and last["channel"] == "chat" and last["backend"] == "extractive"
    assert "900101-1234567" not in last["question"] and "[주민등록번호]" in last["question"]
    assert any(c.startswith(RESTRICTED_DOC) for c in last["cited"]) and len(last["answer_sha256"]) == 64
    assert set(last["cited"]) <= set(last["retrieved"])


# ---------------------------------------------------------------- access control


def test_restricted_document_reaches_its_group(app, bundled_kb):
    _, url = app
    history, _, sources = _client(url, "compliance").predict(RESTRICTED_QUESTION, [], api_name="/ask")
    assert RESTRICTED_DOC in sources
    # The leak check below would see it: the compliance user gets sentences a teller may not.
    assert [s for s in restricted_sentences(bundled_kb, ["branch"]) if s in sources]


def test_restricted_document_never_reaches_a_user_outside_its_group(app, bundled_kb):
    chat, url = app
    secret = restricted_sentences(bundled_kb, ["branch"])
    assert len(secret) > 20  # the compliance and credit documents are there to be kept out
    # Through the API, as the page calls it.
    history, _, sources = _client(url, "teller").predict(RESTRICTED_QUESTION, [], api_name="/ask")
    seen = json.dumps(history, ensure_ascii=False) + sources
    assert RESTRICTED_DOC not in seen and "edd-high-risk" not in seen
    assert not [s for s in secret if s in seen or s in seen.replace("\\", "")]
    # Through the chat itself, every streamed step included.
    steps = list(chat.answer(RESTRICTED_QUESTION, "teller"))
    result = steps[-1][1]
    assert all(src["id"] != RESTRICTED_DOC for src in result.sources)
    assert not [s for s in secret if any(s in text for text, _ in steps)]


FOLLOW_UP = "그럼 보고 여부는 누가 최종 결정하나요?"


def _restricted_history(bundled_kb) -> list[dict]:
    """A conversation steering a follow-up to the compliance-only document: its question and its
    own sentences as an earlier "answer" (what a forged page, or a user who was told, could send),
    in the Chatbot's message format (content as text parts)."""
    turns = [
        ("user", RESTRICTED_QUESTION),
        ("assistant", " ".join(s.lstrip("> ") for s in restricted_sentences(bundled_kb, ["branch"])[:3])),
    ]
    return [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns]


def test_history_never_widens_what_a_user_may_see(app, bundled_kb):
    chat, url = app
    secret = restricted_sentences(bundled_kb, ["branch"])
    history = _restricted_history(bundled_kb)
    # The same follow-up and history reach the document for its group: the history does steer retrieval.
    _, _, sources = _client(url, "compliance").predict(FOLLOW_UP, history, api_name="/ask")
    assert RESTRICTED_DOC in sources
    # A teller sending it (through the page's API) gets nothing of the document.
    shown, _, sources = _client(url, "teller").predict(FOLLOW_UP, history, api_name="/ask")
    answer = _answer_text(shown)
    assert RESTRICTED_DOC not in sources and not [s for s in secret if s in sources or s in answer.replace("\\", "")]
    from kofin.serve.render import conversation

    steps = list(chat.answer(FOLLOW_UP, "teller", history=conversation(history)))
    result = steps[-1][1]
    assert result is not None and all(src["id"] != RESTRICTED_DOC for src in result.sources)
    assert not [s for s in secret if s in result.answer]


def test_the_chat_sends_the_conversation_as_plain_history(app, monkeypatch):
    chat, url = app
    seen: list = []
    real = chat.assistant.stream

    def recording(question, user=None, **kw):
        seen.append(kw.get("history"))
        return real(question, user, **kw)

    monkeypatch.setattr(chat.assistant, "stream", recording)
    client = _client(url, "teller")
    first, _, _ = client.predict(OPEN_QUESTION, [], api_name="/ask")
    client.predict("그럼 6개월 미만이면요?", first, api_name="/ask")
    assert seen[0] is None
    assert seen[1][0] == {"role": "user", "content": OPEN_QUESTION}
    assert seen[1][1]["role"] == "assistant" and "중도해지이율" in seen[1][1]["content"]
    assert "\\" not in seen[1][1]["content"] and "**" not in seen[1][1]["content"]


def test_an_unexpected_failure_is_shown_with_a_message(app, monkeypatch):
    chat, url = app

    def broken(*args, **kw):
        raise RuntimeError()  # no message of its own: Gradio would show a bare "Error"
        yield

    monkeypatch.setattr(chat.assistant, "stream", broken)
    with pytest.raises(Exception, match="답변하지 못했습니다: 내부 오류"):
        _client(url, "teller").predict(OPEN_QUESTION, [], api_name="/ask")


def test_the_user_comes_from_the_session_not_the_request_body(app):
    _, url = app
    client = _client(url, "teller")
    deps = {d.get("api_name"): d for d in client.config["dependencies"]}
    types = {c["id"]: c["type"] for c in client.config["components"]}
    assert [types[i] for i in deps["ask"]["inputs"]] == [
        "textbox",
        "chatbot",
    ]  # the question and history: no user or groups to forge
    assert not deps["reindex"]["inputs"] and {"upload", "reindex"} <= set(deps)


def test_the_anonymous_login_page_describes_no_endpoint(app):
    _, url = app
    status, page = _http(url + "/")  # urllib follows the redirect to /login
    assert status == 200 and 'action="/login"' in page and "<title>가람은행 업무 도우미 — 로그인</title>" in page
    assert '"/ask"' not in page and '"/upload"' not in page and "dependencies" not in page and "<script" not in page


def test_admin_actions_are_refused_for_staff_on_the_server(app):
    chat, url = app
    client = _client(url, "teller")
    with pytest.raises(Exception, match="관리자만"):
        client.predict(api_name="/reindex")
    assert not chat.cfg.upload_dir.exists()


def test_an_overlong_question_is_refused_with_a_clear_state(app):
    chat, url = app
    history, _, sources = _client(url, "teller").predict(
        "예금 " * (chat.cfg.max_question_chars // 2), [], api_name="/ask"
    )
    assert "질문이 너무 깁니다" in _answer_text(history) and "표시할 출처가 없습니다" in sources


@pytest.mark.slow
def test_twenty_simultaneous_sessions_all_get_answers(app):
    """Behaviour, not speed (benchmarks/serve_concurrency.py measures the times): 20 logged-in
    sessions released at once through the queue all get their own cited answer, and the audit
    chain stays whole."""
    import threading

    from kofin.serve.audit import verify_audit

    chat, url = app
    questions = [
        "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?",
        "예금자보호 한도는 얼마인가요?",
        "신용카드를 분실했을 때 어떻게 해야 하나요?",
        "해외송금 한도와 필요한 서류는 무엇인가요?",
        "휴면예금은 어떻게 찾을 수 있나요?",
    ]
    clients = [_client(url, ("teller", "compliance", "admin")[i % 3]) for i in range(20)]
    before = len(_answers(chat.cfg.audit_path))
    barrier, results, errors = threading.Barrier(20), [], []

    def ask(i: int) -> None:
        barrier.wait()
        try:
            history, _, sources = clients[i].predict(questions[i % len(questions)], [], api_name="/ask")
            results.append((i, _answer_text(history), sources))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{i}: {err}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 20
    assert all(re.search(r"\\?\[\d\\?\]", text) and "kofin-cited" in sources for _, text, sources in results)
    check = verify_audit(chat.cfg.audit_path)
    assert check.ok and len(_answers(chat.cfg.audit_path)) == before + 20


# ---------------------------------------------------------------- what Gradio's login leaves open (serve/guard.py)


def _logged_in(url: str, user: str):
    from serve_fixtures import login

    return login(url, user)


@pytest.mark.parametrize(
    "method,path",
    [("POST", "/gradio_api/cancel"), ("GET", "/gradio_api/heartbeat/abc"), ("GET", "/gradio_api/stream/abc")],
)
def test_session_routes_gradio_leaves_open_need_a_login(app, method, path):
    _, url = app
    status, text = _http(
        url + path, method, {"session_hash": "abc", "event_id": "x", "fn_index": 0} if method == "POST" else None
    )
    assert status == 401 and "Not authenticated" in text


def test_deep_links_staff_uploads_and_other_origins_are_refused(app):
    _, url = app
    teller, admin = _logged_in(url, "teller"), _logged_in(url, "admin")
    assert teller("/gradio_api/deep_link?session_hash=abc")[0] == 404  # would snapshot another session's chat
    assert teller("/?deep_link=abcdef")[0] == 404
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.md"\r\n\r\nhello\r\n--x--\r\n'
    assert teller("/gradio_api/upload", "POST", multipart, body)[0] == 403
    assert admin("/gradio_api/upload", "POST", multipart, body)[0] == 200
    assert teller("/config", headers={"Origin": "https://evil.example"})[0] == 403
    assert teller("/config", headers={"Origin": url})[0] == 200


def test_origin_null_is_refused_on_login_api_and_uploads(app):
    _, url = app
    teller, admin = _logged_in(url, "teller"), _logged_in(url, "admin")
    null = {"Origin": "null"}
    assert teller("/config", headers=null)[0] == 403
    assert (
        teller(
            "/gradio_api/queue/join",
            "POST",
            {**null, "Content-Type": "application/json"},
            json.dumps({"data": [OPEN_QUESTION, []], "fn_index": 0, "session_hash": "abc"}).encode(),
        )[0]
        == 403
    )
    multipart = {"Content-Type": "multipart/form-data; boundary=x", **null}
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.md"\r\n\r\nhello\r\n--x--\r\n'
    assert admin("/gradio_api/upload", "POST", multipart, body)[0] == 403
    status, text = _http(url + "/login", "POST", None, {"Origin": "null"})
    assert status == 403 and "cross-origin" in text


def test_a_host_that_is_not_a_configured_server_name_is_refused(app):
    """DNS rebinding: a page on evil.example that resolves to the chat's address sends Host: evil.example."""
    _, url = app
    teller = _logged_in(url, "teller")
    port = url.rsplit(":", 1)[1]
    status, text = teller("/config", headers={"Host": f"evil.example:{port}"})
    assert status == 421 and "server_names" in text
    assert teller("/config", headers={"Host": f"localhost:{port}"})[0] == 200
    assert _http(url + "/", headers={"Host": "evil.example"})[0] == 421


def test_host_names_are_read_without_ports():
    from kofin.serve.guard import host_name

    assert (
        host_name("Chat.Bank.Local:443") == "chat.bank.local"
        and host_name("[::1]:7860") == "::1"
        and host_name("10.0.0.5") == "10.0.0.5"
    )


def test_only_admins_get_the_upload_listing(app):
    chat, _ = app
    assert chat.uploaded_for("admin").strip() and chat.uploaded_for("teller") == "" and chat.uploaded_for(None) == ""


def test_no_answer_is_given_when_the_audit_log_was_cut(bundled_kb, tmp_path):
    """The chat checks the chain before answering: a cut log gets an error, not an unrecorded answer."""
    from kofin.serve.audit import verify_audit

    cfg = demo_config(bundled_kb, tmp_path / "serve")
    with running_app(cfg) as (chat, url):
        client = _client(url, "teller")
        client.predict(OPEN_QUESTION, [], api_name="/ask")
        lines = chat.cfg.audit_path.read_text(encoding="utf-8").splitlines()
        chat.cfg.audit_path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
        job = client.submit(OPEN_QUESTION, [], api_name="/ask")
        with pytest.raises(Exception, match="감사 로그가 손상되어"):
            job.result()
        assert not any("중도해지이율" in _answer_text(update[0]) for update in job.outputs() if update and update[0])
        assert len(chat.cfg.audit_path.read_text(encoding="utf-8").splitlines()) == len(lines) - 1
        assert not verify_audit(chat.cfg.audit_path).ok
        # A login cannot be recorded either: refused with the reason, no session.
        req = urllib.request.Request(
            url + "/login",
            data=b"username=teller&password=teller-demo-1",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 503 and "감사 로그가 손상되어" in err.value.read().decode("utf-8")
