"""Sessions that expire (idle, absolute) on a fake clock, POST logout, login throttling and lockout,
and the login events in the audit chain: through the running chat and on the store directly."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from serve_fixtures import PASSWORDS, FakeClock, demo_config, login, serving


@pytest.fixture(scope="module")
def served(bundled_kb, tmp_path_factory):
    clock = FakeClock()
    cfg = demo_config(bundled_kb, tmp_path_factory.mktemp("sessions") / "serve")
    with serving(cfg, clock) as (chat, url, sessions):
        yield chat, url, sessions, clock


@pytest.fixture
def app(served):
    chat, url, sessions, clock = served
    clock.advance(minutes=2)  # a fresh throttling minute for each test
    return served


def _post(url: str, path: str, form: dict | None = None, headers: dict | None = None):
    data = urllib.parse.urlencode(form or {}).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode("utf-8"), r.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8"), err.headers


def _events(chat, since: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in chat.cfg.audit_path.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows[since:] if "event" in r]


def _lines(chat) -> int:
    return len(chat.cfg.audit_path.read_text(encoding="utf-8").splitlines()) if chat.cfg.audit_path.exists() else 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


# ---------------------------------------------------------------- expiry


def test_an_idle_session_expires_after_ten_minutes_on_every_route(app):
    chat, url, sessions, clock = app
    teller = login(url, "teller")
    assert teller("/config")[0] == 200
    clock.advance(minutes=9)
    assert teller("/config")[0] == 200  # a request within the idle time keeps it alive
    clock.advance(minutes=9, seconds=30)
    assert teller("/gradio_api/info")[0] == 200
    before = _lines(chat)
    clock.advance(minutes=10, seconds=1)
    status, text = teller("/config")
    assert status == 401 and "세션이 만료되었습니다" in text
    # Every route the guard covers, the queue and the admin-only upload included: the session is gone.
    assert teller("/gradio_api/queue/join", "POST", {"Content-Type": "application/json"}, b"{}")[0] == 401
    assert teller("/gradio_api/heartbeat/abc")[0] == 401
    events = _events(chat, before)
    assert [(e["event"], e["outcome"], e["user"]) for e in events] == [("session_expired", "idle", "teller")]


def test_the_expired_page_is_korean_and_leads_to_the_login_form(app):
    chat, url, sessions, clock = app
    teller = login(url, "teller")
    clock.advance(minutes=11)
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor(teller.jar))
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(urllib.request.Request(url + "/", headers={"Accept": "text/html"}), timeout=30)
    assert err.value.code == 303 and err.value.headers["location"] == "/login?m=expired"
    assert "kofin-session=;" in err.value.headers["set-cookie"]
    with urllib.request.urlopen(url + "/login?m=expired", timeout=30) as r:
        page = r.read().decode("utf-8")
    assert "세션이 만료되었습니다" in page and 'type="password"' in page


def test_the_notice_survives_a_background_request_finding_the_expiry_first(app):
    # The open tab's heartbeat usually reaches the server before the user reloads: its 401 must not
    # use up the notice, or the reload lands on a bare login page with no word of why.
    chat, url, sessions, clock = app
    teller = login(url, "teller")
    clock.advance(minutes=11)
    assert teller("/gradio_api/heartbeat/abc")[0] == 401
    assert teller("/config")[0] == 401  # still no session for the API either
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor(teller.jar))
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(urllib.request.Request(url + "/", headers={"Accept": "text/html"}), timeout=30)
    assert err.value.code == 303 and err.value.headers["location"] == "/login?m=expired"
    assert "kofin-session=;" in err.value.headers["set-cookie"]  # said once: the next load is a plain login
    with pytest.raises(urllib.error.HTTPError) as again:
        opener.open(urllib.request.Request(url + "/", headers={"Accept": "text/html"}), timeout=30)
    assert again.value.headers["location"] == "/login"


def test_an_active_session_still_ends_after_eight_hours(app):
    chat, url, sessions, clock = app
    teller = login(url, "teller")
    for _ in range(7 * 6 + 5):  # a request every 9.5 minutes: never idle, 7.4 hours
        clock.advance(minutes=9.5)
        assert teller("/config")[0] == 200
    before = _lines(chat)
    clock.advance(minutes=35)  # 8 hours since login (and idle past 10 minutes too: absolute is reported first)
    assert teller("/config")[0] == 401
    assert [(e["event"], e["outcome"]) for e in _events(chat, before)] == [("session_expired", "absolute")]


def test_logout_is_a_post_that_ends_the_session_on_the_server(app):
    chat, url, sessions, clock = app
    teller = login(url, "teller")
    cookie = next(c.value for c in teller.jar if c.name == "kofin-session")
    assert teller("/logout")[0] == 405 and teller("/config")[0] == 200  # a GET (a link, an image) logs nobody out
    before = _lines(chat)
    status, _ = teller("/logout", "POST")
    assert status == 200 and teller("/config")[0] == 401
    # The old cookie, replayed by hand, is worthless: the session is gone from the store.
    req = urllib.request.Request(url + "/config", headers={"Cookie": f"kofin-session={cookie}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 401
    assert [(e["event"], e["user"]) for e in _events(chat, before)] == [("logout", "teller")]


# ---------------------------------------------------------------- login throttling and lockout


def test_five_failures_lock_the_name_and_the_events_are_audited(app):
    chat, url, sessions, clock = app
    before = _lines(chat)
    answers = [_post(url, "/login", {"username": "compliance", "password": f"wrong-{i}"})[0] for i in range(5)]
    assert answers == [401, 401, 401, 401, 423]
    status, text, _ = _post(url, "/login", {"username": "compliance", "password": PASSWORDS["compliance"]})
    assert status == 423 and "잠겼습니다" in text  # the right password does not open a locked name
    events = [(e["event"], e["outcome"]) for e in _events(chat, before)]
    assert events == [("login", "failure")] * 5 + [("lockout", "locked"), ("login", "locked")]
    assert "compliance" in sessions.lockouts()
    clock.advance(minutes=16)  # lockout_minutes: 15
    assert _post(url, "/login", {"username": "compliance", "password": PASSWORDS["compliance"]})[0] == 200


def test_an_administrator_unlocks_a_locked_name(app):
    chat, url, sessions, clock = app
    for i in range(5):
        _post(url, "/login", {"username": "teller", "password": f"nope-{i}"})
    assert _post(url, "/login", {"username": "teller", "password": PASSWORDS["teller"]})[0] == 423
    from gradio_client import Client

    admin = Client(url + "/", auth=("admin", PASSWORDS["admin"]), verbose=False)
    status, listing, _ = admin.predict("teller", api_name="/unlock")
    assert "잠금 해제" in status and "teller" not in listing
    assert _post(url, "/login", {"username": "teller", "password": PASSWORDS["teller"]})[0] == 200
    assert any(e["event"] == "unlock" and e["by"] == "admin" for e in _events(chat))
    with pytest.raises(Exception, match="관리자만"):
        Client(url + "/", auth=("teller", PASSWORDS["teller"]), verbose=False).predict("teller", api_name="/unlock")


def test_a_burst_of_sixty_wrong_passwords_is_cut_short(app):
    """The probe's 60 wrong passwords in 5.5 s: 5 are checked, the rest refused unchecked."""
    chat, url, sessions, clock = app
    before = _lines(chat)
    statuses = [_post(url, "/login", {"username": "admin", "password": f"guess-{i}"})[0] for i in range(60)]
    assert statuses[:4] == [401] * 4 and set(statuses[4:]) == {423}  # answered at once, never checked
    outcomes = [e["outcome"] for e in _events(chat, before) if e["event"] == "login"]
    assert outcomes.count("failure") == 5 and len(outcomes) == 60
    sessions.unlock("admin", by="test")


def test_one_address_spraying_names_is_throttled(app):
    chat, url, sessions, clock = app
    statuses = [_post(url, "/login", {"username": f"user{i}", "password": "x"})[0] for i in range(22)]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429, 429]
    status, text, _ = _post(
        url, "/login", {"username": "teller", "password": PASSWORDS["teller"]}, {"Accept": "text/html"}
    )
    assert status == 429 and "로그인 시도가 너무 많습니다" in text
    clock.advance(minutes=1, seconds=1)
    assert _post(url, "/login", {"username": "teller", "password": PASSWORDS["teller"]})[0] == 200


def test_a_failed_name_is_masked_in_the_audit_chain(app):
    from kofin.serve.audit import verify_audit

    chat, url, sessions, clock = app
    before = _lines(chat)
    _post(url, "/login", {"username": "900101-1234568", "password": "x"})
    (event,) = _events(chat, before)
    assert (
        event["user"] == "[주민등록번호]" and event["address"] == "127.0.0.1" and verify_audit(chat.cfg.audit_path).ok
    )


# ---------------------------------------------------------------- the store, directly


def test_file_store_sessions_survive_a_second_process_view(tmp_path):
    from kofin.serve.sessions import LoginConfig, SessionConfig, Sessions
    from kofin.serve.store import DirectoryUser, FileStore
    from kofin.serve.users import User, UserRegistry, hash_password

    clock = FakeClock()
    users = UserRegistry([User(name="kim", password_hash=hash_password("kim-pass-1"), groups=["branch"])])
    one = Sessions(
        FileStore(tmp_path / "state.sqlite"),
        users,
        tmp_path / "audit.jsonl",
        SessionConfig(),
        LoginConfig(),
        clock=clock,
    )
    two = Sessions(
        FileStore(tmp_path / "state.sqlite"),
        users,
        tmp_path / "audit.jsonl",
        SessionConfig(),
        LoginConfig(),
        clock=clock,
    )
    outcome = one.login_sync("kim", "kim-pass-1", "10.0.0.7")
    assert outcome.status == 200 and two.resolve(outcome.token).row.groups == ["branch"]
    assert one.store.session(outcome.token) is None  # only the token's hash is stored
    clock.advance(minutes=11)
    assert two.resolve(outcome.token).expired == "idle" and one.resolve(outcome.token).row is None
    one.store.put_directory_user(DirectoryUser("lee", ["credit"], False, "ldap"), clock())
    users.directory = two.store.directory_user
    assert users.get("lee").groups == ["credit"] and users.get("nobody") is None


def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy():
    from kofin.serve.guard import SessionGuard

    guard = SessionGuard(None, None, proxies=["10.0.0.10"])
    behind = {"x-forwarded-for": "192.168.7.21, 10.1.2.3"}
    assert guard.client_address({"client": ("10.0.0.10", 5000)}, behind) == "10.1.2.3"  # the hop the proxy added
    assert guard.client_address({"client": ("10.9.9.9", 5000)}, behind) == "10.9.9.9"  # anyone else's header is ignored
    assert guard.client_address({"client": ("10.0.0.10", 5000)}, {}) == "10.0.0.10"


def test_configs_for_replicas_and_public_statutes_load():
    from pathlib import Path

    from kofin.config import load_config
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.serve_config import ServeConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(ServeConfig, root / "serve" / "replicas.yaml")
    assert cfg.store.kind == "postgresql" and cfg.directory is not None and cfg.login.lockout_minutes == 0
    assert (
        "chat.bank.local" in cfg.allowed_hosts()
        and "0.0.0.0" not in cfg.allowed_hosts()
        and "localhost" not in cfg.allowed_hosts()
    )
    assert load_config(IngestConfig, root / "ingest" / "laws.yaml").default_groups == ["all"]
    assert load_config(IngestConfig, root / "ingest" / "demo.yaml").default_groups == ["admins"]
