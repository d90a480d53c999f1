"""The chat's users and config without a running server: password hashes, the users file, the demo
config, a missing KB, a busy port, and the serve CLI (the running chat is test_serve_app.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from serve_fixtures import DEMO, PASSWORDS, RESTRICTED_DOC, RESTRICTED_QUESTION, demo_config


def test_password_hashes_check_and_unknown_users_fail():
    from kofin.serve.users import User, UserRegistry, check_password, hash_password

    stored = hash_password("s3cret-pass")
    assert stored.startswith("scrypt$") and "s3cret-pass" not in stored and stored != hash_password("s3cret-pass")
    assert check_password("s3cret-pass", stored) and not check_password("s3cret-pasS", stored)
    reg = UserRegistry([User(name="김대리", password_hash=stored, groups=["branch"])])
    assert (
        reg.check("김대리", "s3cret-pass") and not reg.check("김대리", "x") and not reg.check("nobody", "s3cret-pass")
    )


def test_a_plain_password_in_the_users_file_is_an_error_naming_the_line(tmp_path):
    from kofin.config import ConfigError, load_config
    from kofin.serve.serve_config import ServeConfig

    users = tmp_path / "users.yaml"
    users.write_text("users:\n  - name: kim\n    password_hash: hunter22\n    groups: [branch]\n", encoding="utf-8")
    from kofin.serve.users import UserRegistry

    with pytest.raises(ConfigError, match=r"users.yaml:3 .*password_hash.*hash-password"):
        UserRegistry.load([], users)
    with pytest.raises(ConfigError, match="no users"):
        load_config(ServeConfig, None, [f"kb={tmp_path}", f"output_dir={tmp_path}"])


def test_missing_kb_without_build_source_is_explained(tmp_path):
    from kofin.errors import KofinError
    from kofin.serve.chat import prepare

    cfg = demo_config(tmp_path / "nokb", tmp_path / "out", "build_from=[]")
    with pytest.raises(KofinError, match=r"kofin ingest --kb .*build_from"):
        prepare(cfg)


def test_port_in_use_is_explained():
    from kofin.errors import KofinError
    from kofin.serve.app import check_port

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(KofinError, match=r"server_port \d+ on 127.0.0.1 is not free.*server_port="):
            check_port("127.0.0.1", s.getsockname()[1])


def test_serve_cli_help_check_and_hash_password(bundled_kb, tmp_path):
    kofin = [sys.executable, "-m", "kofin.cli"]
    out = subprocess.run(kofin + ["serve", "--help"], capture_output=True, text=True)
    assert (
        out.returncode == 0
        and "server_port" in out.stdout
        and "users_file" in out.stdout
        and "hash-password" in out.stdout
    )
    out = subprocess.run(
        kofin + ["serve", "--config", str(DEMO), "--check", f"kb={bundled_kb}", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "63 documents" in out.stdout and "3 users" in out.stdout
    out = subprocess.run(kofin + ["serve", "hash-password"], input="long-enough-pw\n", capture_output=True, text=True)
    from kofin.serve.users import check_password

    assert out.returncode == 0 and check_password("long-enough-pw", out.stdout.strip())
    out = subprocess.run(kofin + ["serve"], capture_output=True, text=True)
    assert out.returncode == 2 and "--config" in out.stderr


def test_demo_config_binds_loopback_and_stores_only_hashes():
    from kofin.config import load_config
    from kofin.serve.serve_config import ServeConfig
    from kofin.serve.users import check_password

    cfg = load_config(ServeConfig, DEMO)
    assert cfg.server_name == "127.0.0.1" and cfg.server_port == 7860 and cfg.generation.backend == "extractive"
    assert {u.name for u in cfg.users} == set(PASSWORDS) and [u.name for u in cfg.users if u.admin] == ["admin"]
    assert "compliance" not in next(u for u in cfg.users if u.name == "teller").groups
    for user in cfg.users:  # the printed demo passwords open exactly these hashes
        assert check_password(PASSWORDS[user.name], user.password_hash)


def test_kofin_ask_reads_the_chat_users_file(bundled_kb, tmp_path, capsys, monkeypatch):
    from kofin.cli import main as kofin

    monkeypatch.setenv("KOFIN_HOME", str(tmp_path / "home"))
    users = tmp_path / "users.yaml"
    users.write_text(DEMO.read_text(encoding="utf-8").split("users:\n", 1)[1].join(["users:\n", ""]), encoding="utf-8")
    for user, expect in (("compliance", True), ("teller", False)):
        assert (
            kofin(
                ["ask", "--kb", str(bundled_kb), "--users", str(users), "--user", user, "--json", RESTRICTED_QUESTION]
            )
            == 0
        )
        out = json.loads(capsys.readouterr().out)
        assert any(s["id"] == RESTRICTED_DOC for s in out["sources"]) is expect
    from kofin.serve.audit import verify_audit

    assert verify_audit(tmp_path / "home" / "logs" / "ask.jsonl").lines == 2
