"""Offline by construction: the environment every command gets, and the test network guard."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kofin.offline import OFFLINE_ENV, apply_offline_env

# TEST-NET-1 (RFC 5737): documentation-only, never routed. The guard refuses before any packet.
UNROUTABLE = ("192.0.2.1", 443)


def _take_report_lines(before: int) -> str:
    report = Path(os.environ["KOFIN_NETGUARD_REPORT"])
    text = report.read_text() if report.exists() else ""
    # Remove what this test provoked on purpose so the autouse guard does not fail it.
    if report.exists():
        with open(report, "r+") as f:
            f.truncate(before)
    return text[before:]


def _report_size() -> int:
    report = Path(os.environ["KOFIN_NETGUARD_REPORT"])
    return report.stat().st_size if report.exists() else 0


def test_offline_env_is_forced():
    env = apply_offline_env({"HF_HUB_OFFLINE": "0"})
    assert env["HF_HUB_OFFLINE"] == "1"
    for key in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "AXOLOTL_DO_NOT_TRACK", "DO_NOT_TRACK"):
        assert env[key] == "1"
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False" and env["WANDB_MODE"] == "disabled"


def test_cli_subprocess_gets_the_offline_env():
    code = (
        "import os,sys; from kofin.cli import main; main(['--version']); "
        f"print({{k: os.environ[k] for k in {sorted(OFFLINE_ENV)!r}}})"
    )
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert str({k: OFFLINE_ENV[k] for k in sorted(OFFLINE_ENV)}) in out.stdout, out.stderr


def test_guard_blocks_and_records_non_loopback_in_process():
    before = _report_size()
    with pytest.raises(OSError, match="network guard"):
        socket.create_connection(UNROUTABLE, timeout=1)
    with pytest.raises(OSError, match="network guard"):
        socket.getaddrinfo("huggingface.example", 443)
    recorded = _take_report_lines(before)
    assert "192.0.2.1" in recorded and "huggingface.example" in recorded


def test_guard_blocks_in_subprocesses_too():
    before = _report_size()
    code = f"import socket; socket.create_connection({UNROUTABLE!r}, timeout=1)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "network guard" in out.stderr
    assert "192.0.2.1" in _take_report_lines(before)


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    conn, _ = server.accept()
    client.sendall(b"ok")
    assert conn.recv(2) == b"ok"
    for s in (client, conn, server):
        s.close()


def test_hub_download_fails_loudly():
    # Offline mode answers from the local cache or raises at once, without a connection attempt
    # (the autouse guard would fail this test if one were made).
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert constants.HF_HUB_OFFLINE
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("yanolja/EEVE-Korean-10.8B-v1.0", "config.json", cache_dir="/nonexistent-cache")
