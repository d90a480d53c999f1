"""A throwaway PostgreSQL cluster on 127.0.0.1 for the replica tests and the two-replica benchmark.

`initdb` + `pg_ctl` (PostgreSQL 15, /usr/lib/postgresql/15/bin) in a scratch folder, trust
authentication for one user on the loopback address only, fsync off (nothing here outlives the
run). PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` system user
(the Debian package's), through `runuser`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("KOFIN_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "kofin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_owner(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def throwaway_cluster():
    """Yields the DSN of a fresh, empty cluster; stops it and removes its folder on exit."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"{PG_BIN}/initdb is missing: install PostgreSQL 15 (apt-get install postgresql-15)")
    root = Path(tempfile.mkdtemp(prefix="kofin-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    run = lambda cmd: subprocess.run(_as_cluster_owner(cmd), check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"throwaway PostgreSQL cluster did not start: {err.stderr or err.stdout}") from None
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_cluster_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            text=True,
        )
        shutil.rmtree(root, ignore_errors=True)
