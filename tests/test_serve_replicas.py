"""Two `kofin serve` replicas sharing one PostgreSQL store: one unbroken audit chain under 40
sessions alternating between them, sessions honoured, expired and logged out across replicas,
lockouts shared, and a cut chain refused there too.

A throwaway cluster (tests/pg_cluster.py: initdb + pg_ctl on 127.0.0.1, as the postgres user when
the tests run as root) and two server processes on two ports."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pg_cluster import throwaway_cluster
from serve_fixtures import DEMO, OPEN_QUESTION, PASSWORDS, free_port, login

QUESTIONS = [
    "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?",
    "예금자보호 한도는 얼마인가요?",
    "신용카드를 분실했을 때 어떻게 해야 하나요?",
    "해외송금 한도와 필요한 서류는 무엇인가요?",
    "휴면예금은 어떻게 찾을 수 있나요?",
]


@pytest.fixture(scope="module")
def dsn():
    with throwaway_cluster() as url:
        yield url


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"kofin serve exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}", pytrace=False
            )
        try:
            with urllib.request.urlopen(url + "/login", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"kofin serve did not answer on {url}: {log.read_text(errors='replace')[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def replicas(dsn, bundled_kb, tmp_path_factory):
    """Two servers, each with its own output_dir: all they share is the PostgreSQL store."""
    procs, urls = [], []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(f"replica-{name}")
        port = free_port()
        log = out / "serve.log"
        command = [
            sys.executable,
            "-m",
            "kofin.cli",
            "serve",
            "--config",
            str(DEMO),
            f"kb={bundled_kb}",
            f"output_dir={out}",
            f"server_port={port}",
            "store.kind=postgresql",
            f"store.dsn={dsn}",
        ]
        procs.append((subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT), log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for (proc, log), url in zip(procs, urls, strict=True):
            _wait_up(url, proc, log)
        yield urls
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)


def _rows(dsn: str) -> list[dict]:
    import psycopg

    with psycopg.connect(dsn) as db:
        return [json.loads(line) for (line,) in db.execute("SELECT line FROM kofin_audit ORDER BY seq")]


def _sql(dsn: str, statement: str, params: tuple = ()) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(statement, params)


@pytest.mark.slow
def test_forty_sessions_alternating_between_replicas_keep_one_chain(replicas, dsn):
    from gradio_client import Client

    from kofin.serve.audit import verify_audit_target

    users = list(PASSWORDS)
    results, errors = [], []
    gate = threading.Semaphore(8)  # 8 in flight at a time across both replicas (2 CPU cores)

    def one(i: int) -> None:
        with gate:
            try:
                client = Client(replicas[i % 2] + "/", auth=(users[i % 3], PASSWORDS[users[i % 3]]), verbose=False)
                history, _, sources = client.predict(QUESTIONS[i % len(QUESTIONS)], [], api_name="/ask")
                results.append((i, history[-1]["content"], sources))
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(f"{i}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors and len(results) == 40
    assert all("kofin-source" in sources for _, _, sources in results)
    check = verify_audit_target(dsn)
    assert check.ok and check.head_checked, check.summary()
    rows = _rows(dsn)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))  # no gaps, no forks
    answers = [r for r in rows if "event" not in r]
    logins = [r for r in rows if r.get("event") == "login" and r["outcome"] == "success"]
    assert len(answers) == 40 and len(logins) == 40 and {r["user"] for r in answers} == set(users)


def test_a_session_is_honoured_and_logged_out_across_replicas(replicas):
    a, b = replicas
    teller = login(a, "teller")
    cookie = next(c.value for c in teller.jar if c.name == "kofin-session")
    on_b = lambda path, method="GET": _call(b, path, cookie, method)  # noqa: E731
    assert on_b("/config")[0] == 200  # made on A, honoured on B
    assert on_b("/logout", "POST")[0] == 200  # ended on B ...
    assert teller("/config")[0] == 401  # ... and gone on A


def test_a_session_expires_on_the_other_replica(replicas, dsn):
    a, b = replicas
    teller = login(a, "teller")
    cookie = next(c.value for c in teller.jar if c.name == "kofin-session")
    assert _call(b, "/config", cookie)[0] == 200
    # Eleven minutes without a request, as the store sees it (the replicas keep real time).
    import hashlib

    _sql(
        dsn,
        "UPDATE kofin_sessions SET last_seen = last_seen - 660, created = created - 660 WHERE token_hash = %s",
        (hashlib.sha256(cookie.encode()).hexdigest(),),
    )
    status, text = _call(b, "/config", cookie)
    assert status == 401 and "세션이 만료되었습니다" in text
    assert teller("/config")[0] == 401
    assert any(r.get("event") == "session_expired" and r["outcome"] == "idle" for r in _rows(dsn))


def test_a_lockout_on_one_replica_holds_on_the_other(replicas, dsn):
    a, b = replicas
    for i in range(5):
        login(a, "compliance", f"wrong-{i}")
    refused = login(b, "compliance")
    assert refused("/config")[0] == 401 and not [c for c in refused.jar if c.name == "kofin-session"]
    _sql(dsn, "DELETE FROM kofin_lockouts WHERE username = 'compliance'")  # what the admin tab's unlock does
    _sql(dsn, "DELETE FROM kofin_login_failures WHERE key = 'user:compliance'")
    assert login(b, "compliance")("/config")[0] == 200


UPLOAD_MD = (
    "---\ntitle: 무지개 적금 안내\ngroups: [all]\n---\n# 무지개 적금 안내\n## 1. 우대 이율\n"
    "무지개 적금의 우대 이율은 연 0.7%p이며 급여 이체 고객에게 준다.\n"
)


def test_an_upload_on_one_replica_reaches_the_others_reindex(replicas, dsn, tmp_path):
    from gradio_client import Client, handle_file

    a, b = replicas
    doc = tmp_path / "rainbow.md"
    doc.write_text(UPLOAD_MD, encoding="utf-8")
    status, _, _ = Client(a + "/", auth=("admin", PASSWORDS["admin"]), verbose=False).predict(
        [handle_file(str(doc))], ["branch"], api_name="/upload"
    )
    assert "저장: rainbow.md" in status
    import psycopg

    with psycopg.connect(dsn) as db:
        assert db.execute("SELECT access_groups FROM kofin_uploads WHERE name = 'rainbow.md'").fetchone() == (
            '["branch"]',
        )
    question = "무지개 적금의 우대 이율은 얼마인가요?"
    teller_b = Client(b + "/", auth=("teller", PASSWORDS["teller"]), verbose=False)
    assert "rainbow.md" not in teller_b.predict(question, [], api_name="/ask")[2]  # B has not re-indexed yet
    status, listing, _ = Client(b + "/", auth=("admin", PASSWORDS["admin"]), verbose=False).predict(api_name="/reindex")
    assert "색인 완료" in status and "rainbow.md" in listing and "branch" in listing
    assert "rainbow.md" in teller_b.predict(question, [], api_name="/ask")[2]


def test_a_cut_chain_in_postgresql_is_refused_not_resealed(replicas, dsn):
    from gradio_client import Client

    from kofin.serve.audit import verify_audit_target

    client = Client(replicas[0] + "/", auth=("teller", PASSWORDS["teller"]), verbose=False)
    _sql(dsn, "DELETE FROM kofin_audit WHERE seq > (SELECT max(seq) - 2 FROM kofin_audit)")
    assert not verify_audit_target(dsn).ok
    before = len(_rows(dsn))
    with pytest.raises(Exception, match="답변하지 못했습니다"):
        client.predict(OPEN_QUESTION, [], api_name="/ask")
    assert len(_rows(dsn)) == before and not verify_audit_target(dsn).ok  # nothing chained onto the cut
    from kofin.cli import main as kofin

    assert kofin(["audit", "verify", dsn]) == 1  # the CLI reads the chain from PostgreSQL too


def _call(url: str, path: str, cookie: str, method: str = "GET") -> tuple[int, str]:
    import urllib.error

    req = urllib.request.Request(
        url + path, method=method, data=b"" if method == "POST" else None, headers={"Cookie": f"kofin-session={cookie}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def test_the_store_reconnects_after_the_server_dropped_its_connection():
    from kofin.serve.audit import verify_audit_target
    from kofin.serve.store import SessionRow
    from kofin.serve.store_pg import PostgresStore

    with throwaway_cluster() as fresh:  # its own cluster: the module's chain is cut by the test above
        store = PostgresStore(fresh)
        store.add_session(SessionRow("reconnect-test", "kim", ["branch"], False, "password", "10.0.0.1", 1.0, 1.0))
        pid = store._db.info.backend_pid
        _sql(fresh, "SELECT pg_terminate_backend(%s)", (pid,))  # what a PostgreSQL restart or failover does to it
        assert store.session("reconnect-test").user == "kim" and store._db.info.backend_pid != pid
        sink = store.audit_sink()
        sink.append({"event": "probe", "n": 1})
        _sql(fresh, "SELECT pg_terminate_backend(%s)", (store._db.info.backend_pid,))
        sink.append({"event": "probe", "n": 2})
        check = verify_audit_target(fresh)
        assert check.ok and check.lines == 2
        store.close()
