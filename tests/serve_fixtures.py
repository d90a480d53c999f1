"""Helpers for the chat tests: the demo config with scratch paths, a running app on a free port,
and the text of documents a user may not read (to prove it never reaches them)."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "serve" / "demo.yaml"
PASSWORDS = {"teller": "teller-demo-1", "compliance": "comply-demo-1", "admin": "admin-demo-1"}
# Asked by the tests: answered from the compliance-only STR procedure for a compliance user.
RESTRICTED_QUESTION = "의심거래 내부보고서는 누가 작성하고 보고 여부는 누가 최종 결정하나요?"
RESTRICTED_DOC = "procedure/str-internal-procedure.md"
OPEN_QUESTION = "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_config(kb: Path, out: Path, *overrides: str):
    from kofin.config import load_config
    from kofin.serve.serve_config import ServeConfig

    return load_config(ServeConfig, DEMO, [f"kb={kb}", f"output_dir={out}", f"server_port={free_port()}", *overrides])


@contextmanager
def running_app(cfg):
    """The chat serving from a thread on cfg's port; closed on exit."""
    with serving(cfg) as (chat, url, _):
        yield chat, url


@contextmanager
def serving(cfg, clock=None):
    """(chat, url, sessions): the chat serving from a thread, its sessions on `clock` (a FakeClock)."""
    from kofin.serve.app import open_sessions, start
    from kofin.serve.chat import prepare

    chat = prepare(cfg)
    sessions = open_sessions(chat, clock)
    demo = start(chat, block=False, sessions=sessions)
    try:
        yield chat, f"http://127.0.0.1:{cfg.server_port}", sessions
    finally:
        demo.close()
        sessions.store.close()


class FakeClock:
    """Time the tests move: `clock.advance(minutes=11)`."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 0.0, minutes: float = 0.0, hours: float = 0.0) -> None:
        self.now += seconds + 60 * minutes + 3600 * hours


def login(url: str, user: str, password: str | None = None, headers: dict | None = None):
    """An opener logged in through POST /login (as a browser form would), and a call(path, ...) helper."""
    import http.cookiejar
    import urllib.error
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"username": user, "password": password or PASSWORDS[user]}).encode()
    try:
        opener.open(
            urllib.request.Request(
                url + "/login",
                data=form,
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            ),
            timeout=30,
        )
    except urllib.error.HTTPError:
        pass  # a refused login: the calls below go without a session

    def call(path: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
        req = urllib.request.Request(url + path, data=data, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=30) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")

    call.jar = jar  # type: ignore[attr-defined]
    return call


def restricted_sentences(kb_path: Path, groups: list[str]) -> list[str]:
    """Sentences (20+ chars) of chunks outside `groups` that no chunk inside them also contains."""
    from kofin.data_ko.korean import split_sentences
    from kofin.serve.kb import read_chunks

    chunks = read_chunks(kb_path)
    allowed = set(groups) | {"all"}
    readable = "\n".join(c["text"] for c in chunks if set(c["groups"]) & allowed)
    out = []
    for c in chunks:
        if not set(c["groups"]) & allowed:
            out += [s for s in split_sentences(c["text"]) if len(s) >= 20 and s not in readable]
    return out


def ask_assistant(kb: Path, tmp_path: Path, **settings):
    """`kofin ask`'s Assistant on `kb`, its audit log in `tmp_path`, with answer settings overridden."""
    from kofin.serve.ask import AskConfig, Assistant

    return Assistant(AskConfig(kb=kb, audit_log=tmp_path / "audit.jsonl", **settings))


def served_assistant(kb: Path, tmp_path: Path):
    """An assistant with the chat's answer settings (configs/serve/demo.yaml)."""
    from kofin.config import load_config
    from kofin.serve.serve_config import ServeConfig

    return ask_assistant(kb, tmp_path, **load_config(ServeConfig, DEMO).answer_settings())
