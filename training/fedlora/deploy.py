"""Flower's deployment engine: a SuperLink, one SuperNode per bank, the run submitted with `flwr run`.

Run as:
    # the aggregator's host (TLS: --ssl-certfile/--ssl-keyfile/--ssl-ca-certfile instead of --insecure)
    flower-superlink --port 9093 --disable-runtime-dependency-installation \
        --ssl-ca-certfile ca.pem --ssl-certfile server.pem --ssl-keyfile server.key
    # each bank's host: its data path is named here, and only here
    kofin fedlora supernode --bank bank_a --data /srv/bank_a/chats.jsonl --superlink 10.0.0.5:9093 \
        --root-certificates ca.pem
    # the aggregator's host again: submit the run (engine.kind: deployment; output_dir on this host)
    kofin fedlora --config configs/fedlora/deployment.yaml

`kofin fedlora` with engine.kind deployment writes the Flower App (a pyproject.toml naming app.py's
components; kofin itself is installed on every host, so nothing is installed at run time) and a
private Flower config holding the SuperLink connection, then runs `flwr run --stream`. The SuperLink
starts the ServerApp, which writes the run directory on the SuperLink's host.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kofin.errors import KofinError
from kofin.offline import apply_offline_env
from kofin.rundir import is_complete
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.run import FLOWER_OFFLINE_ENV
from kofin.training.fedlora.server import RUN_CONFIG_KEY

APP_PYPROJECT = """\
# Written by `kofin fedlora`: the Flower App that `flwr run` submits. Its components live in the
# installed kofin package; the bundle carries no code and installs nothing.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "kofin-fedlora"
version = "1.0.0"
description = "Federated LoRA across banks (kofin fedlora)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "kofin"

[tool.flwr.app.components]
serverapp = "kofin.training.fedlora.app:server_app"
clientapp = "kofin.training.fedlora.app:client_app"

[tool.flwr.app.config]
{key} = ""
"""
CONNECTION = "kofin"


class DeploymentError(KofinError):
    """A deployment run that could not be submitted or did not complete."""


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment of every Flower process kofin starts: offline, telemetry off, the venv's tools on PATH
    (the SuperLink and SuperNodes start `flower-superexec` by name)."""
    env = apply_offline_env(dict(os.environ)) | FLOWER_OFFLINE_ENV
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def toml_string(text: str) -> str:
    # A JSON string with ASCII escapes is a valid TOML basic string.
    return json.dumps(text, ensure_ascii=True)


def write_app(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_PYPROJECT.format(key=RUN_CONFIG_KEY), encoding="utf-8")
    return folder


def write_connection(flwr_home: Path, cfg: FedLoraConfig) -> None:
    e = cfg.engine
    lines = ["[superlink]", f"default = {toml_string(CONNECTION)}", "", f"[superlink.{CONNECTION}]"]
    lines.append(f"address = {toml_string(e.superlink)}")
    if e.insecure:
        lines.append("insecure = true")
    if e.root_certificates is not None:
        lines.append(f"root-certificates = {toml_string(str(e.root_certificates))}")
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def submit_run(cfg: FedLoraConfig, *, quiet: bool = False) -> Path:
    """`flwr run --stream` of kofin's app with this config; the ServerApp writes cfg.output_dir."""
    with tempfile.TemporaryDirectory(prefix="kofin-fedlora-") as tmp:
        root = Path(tmp)
        app = write_app(root / "app")
        write_connection(root / "flwr-home", cfg)
        run_config = root / "run_config.toml"
        run_config.write_text(f"{RUN_CONFIG_KEY} = {toml_string(cfg.model_dump_json())}\n", encoding="utf-8")
        argv = [str(Path(sys.executable).parent / "flwr"), "run", str(app), CONNECTION]
        argv += ["--run-config", str(run_config), "--stream"]
        proc = subprocess.run(
            argv,
            env=flower_env(root / "flwr-home"),
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            text=True,
            check=False,
        )
    if proc.returncode != 0 or not is_complete(cfg.output_dir):
        tail = "\n".join((proc.stdout or "").splitlines()[-20:]) if quiet else "see the Flower log above"
        raise DeploymentError(
            f"the federated run on SuperLink {cfg.engine.superlink} did not complete {cfg.output_dir} "
            f"(flwr run exit {proc.returncode}); {tail}\nThe last completed round stays in "
            f"{cfg.output_dir}.partial on the SuperLink's host; the same command resumes it."
        )
    return cfg.output_dir


# ---------------------------------------------------------------- a bank's SuperNode


def supernode_command(
    bank: str,
    data: Path,
    superlink: str,
    *,
    insecure: bool = False,
    root_certificates: Path | None = None,
    shard: str | None = None,
    max_rows: int | None = None,
    port: int | None = None,
) -> list[str]:
    """`flower-supernode` for one bank; its data path travels in --node-config to its own ClientApp only."""
    node_config = f"bank={toml_string(bank)} data={toml_string(str(Path(data).resolve()))}"
    if shard:
        node_config += f" shard={toml_string(shard)}"
    if max_rows:
        node_config += f" max-rows={max_rows}"
    argv = [str(Path(sys.executable).parent / "flower-supernode"), "--superlink", superlink]
    argv += ["--node-config", node_config]
    if insecure:
        argv.append("--insecure")
    elif root_certificates is not None:
        argv += ["--root-certificates", str(root_certificates)]
    if port is not None:
        argv += ["--port", str(port)]
    return argv


def supernode_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kofin fedlora supernode",
        description="Start this bank's Flower SuperNode: it connects to the SuperLink and trains the federated "
        "adapter on --data, which stays on this host (the server is never told the path).",
    )
    parser.add_argument("--bank", required=True, help="this bank's name, as in the server config's banks")
    parser.add_argument("--data", required=True, type=Path, help="local chats: a `kofin data` run or a JSONL file")
    parser.add_argument("--superlink", required=True, help="host:port of the SuperLink")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (tests on 127.0.0.1 only)")
    parser.add_argument("--root-certificates", type=Path, help="PEM CA bundle that signed the SuperLink's cert")
    parser.add_argument("--shard", help="k/n: train only on rows i %% n == k (demo banks sharing one file)")
    parser.add_argument("--max-rows", type=int, help="train on at most this many rows")
    parser.add_argument("--port", type=int, help="the SuperNode's local ClientAppIo port (default 9094)")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"kofin fedlora supernode: --data {args.data} does not exist on this host", file=sys.stderr)
        return 2
    if not args.insecure and args.root_certificates is None:
        print(
            "kofin fedlora supernode: give --root-certificates ca.pem (TLS to the SuperLink), or --insecure "
            "for a test on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    cmd = supernode_command(
        args.bank,
        args.data,
        args.superlink,
        insecure=args.insecure,
        root_certificates=args.root_certificates,
        shard=args.shard,
        max_rows=args.max_rows,
        port=args.port,
    )
    # exec, not a child: the bank's operator (or a test) stopping this process stops the SuperNode itself.
    os.execve(cmd[0], cmd, flower_env())
