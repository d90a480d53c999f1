"""kofin fedlora on Flower's deployment engine: a SuperLink and three banks' SuperNodes on 127.0.0.1.

Every process is real: `flower-superlink --insecure` on a free port, three `kofin fedlora supernode`
processes (each exec's `flower-supernode` with its bank's data path in --node-config), and
`kofin fedlora` submitting the run with `flwr run`. The SuperLink starts the ServerApp in its own
process, each SuperNode a ClientApp process per run. After round 1 bank_c's SuperNode is killed;
round 2 completes with the two banks left (rounds.min_available_clients 2); then one SecAgg+ round
runs over the same SuperNodes. About two and a half minutes: most of it is Flower starting app
processes and the SuperLink waiting out the dead node's heartbeat.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kofin.config import load_config
from kofin.rundir import require_complete
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.deploy import flower_env
from kofin.training.fedlora.run import main
from kofin.training.fedlora.server import OPENED_FILES, STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BANKS = ("bank_a", "bank_b", "bank_c")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(
        f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


class Processes:
    """Every process the test starts, and everything they start: all killed at teardown, even on failure."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: dict[int, psutil.Process] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115  # open until the process ends
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started[name] = proc
        return proc

    def note_descendants(self) -> None:
        # Flower detaches its SuperExec processes into their own sessions: remember them by pid while
        # their parents are alive, so teardown finds them even after a parent died.
        for proc in self.started.values():
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                pass

    def kill_tree(self, name: str) -> None:
        self.note_descendants()
        proc = self.started[name]
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)

    def kill_all(self) -> None:
        for name in list(self.started):
            self.kill_tree(name)
        for p in self.seen.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        for p in self.seen.values():
            try:
                p.wait(timeout=10)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
                pass


@pytest.fixture(scope="module")
def bank_files(tiny_data_run, tmp_path_factory) -> dict[str, Path]:
    rows = (tiny_data_run / "sft" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("deploy-banks")
    files = {}
    for k, name in enumerate(BANKS):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("\n".join(rows[k::3][:4]) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="module")
def federation(tmp_path_factory, bank_files, tiny_model) -> Iterator[tuple[int, Processes]]:
    """A SuperLink and three SuperNodes on 127.0.0.1, each with its own FLWR_HOME."""
    folder = tmp_path_factory.mktemp("deploy")
    procs = Processes(folder)
    port = free_port()
    try:
        link = procs.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--port", str(port)]
            + ["--disable-runtime-dependency-installation"],
            flower_env(folder / "home-superlink"),
        )
        wait_for_port(port, link, folder / "superlink.log")
        for name in BANKS:
            node_port = free_port()
            node = procs.start(
                name,
                [str(BIN / "kofin"), "fedlora", "supernode", "--bank", name, "--data", str(bank_files[name])]
                + ["--superlink", f"127.0.0.1:{port}", "--insecure", "--port", str(node_port)],
                flower_env(folder / f"home-{name}"),
            )
            wait_for_port(node_port, node, folder / f"{name}.log")
        procs.note_descendants()
        yield port, procs
    finally:
        procs.kill_all()


def deploy_config(out: Path, port: int, *overrides: str) -> FedLoraConfig:
    """configs/fedlora/deployment.yaml pointed at the test's SuperLink, on the tiny model, plain fedavg."""
    return load_config(
        FedLoraConfig,
        ROOT / "configs" / "fedlora" / "deployment.yaml",
        [
            f"output_dir={out}",
            "base_model=null",
            "method=lora",
            "lora.r=4",
            "lora.alpha=8",
            "training.local_steps=1",
            "training.gradient_accumulation_steps=1",
            "training.sequence_len=256",
            "training.precision=fp32",
            "training.gradient_checkpointing=false",
            "rounds.min_available_clients=2",
            "rounds.round_timeout_s=240",
            "rounds.wait_for_clients_s=120",
            "aggregation.method=fedavg",
            "differential_privacy.enabled=false",
            f"engine.superlink=127.0.0.1:{port}",
            "engine.insecure=true",
            "engine.root_certificates=null",
            *overrides,
        ],
    )


def test_three_supernodes_complete_two_rounds_and_a_killed_one_is_tolerated(federation, bank_files, tmp_path):
    port, procs = federation
    out = tmp_path / "fedlora-deploy"
    cfg = deploy_config(out, port, "rounds.num_rounds=2")
    state = Path(str(out) + ".partial") / STATE_FILE
    killed = threading.Event()

    def kill_bank_c_after_round_1() -> None:
        deadline = time.time() + 600
        while time.time() < deadline and not killed.is_set():
            procs.note_descendants()
            try:
                if json.loads(state.read_text(encoding="utf-8"))["completed_round"] >= 1:
                    procs.kill_tree("bank_c")
                    killed.set()
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=kill_bank_c_after_round_1, daemon=True)
    watcher.start()
    try:
        run = main(cfg, quiet=True)
    finally:
        killed.set()  # stops the watcher if the run failed before round 1 completed
        watcher.join(timeout=60)
    assert procs.started["bank_c"].poll() is not None, "bank_c's SuperNode was never killed"
    manifest = require_complete(run, "fedlora")
    m = manifest["metrics"]
    assert m["engine"] == "deployment" and m["rounds_completed"] == 2
    first, second = m["rounds"]
    assert sorted(b["bank"] for b in first["banks"]) == list(BANKS) and first["dropped"] == []
    assert sorted(b["bank"] for b in second["banks"]) == ["bank_a", "bank_b"]
    # The dead node is named once, by its own id (the SuperLink answers for it), not as a second drop.
    (drop,) = second["dropped"]
    bank_c_node = next(b["node_id"] for b in first["banks"] if b["bank"] == "bank_c")
    assert drop["node_id"] == bank_c_node
    assert "Node Unavailable" in drop["reason"] or "no reply within" in drop["reason"]
    assert all(b["samples"] > 0 and b["bytes_sent"] > 0 for r in m["rounds"] for b in r["banks"])
    # The ServerApp ran in the SuperLink's process tree and still never opened a bank's file.
    opened = (run / OPENED_FILES).read_text(encoding="utf-8")
    assert "adapter_config.json" in opened
    assert not [p for p in bank_files.values() if str(p) in opened]
    assert (run / "adapter_model.safetensors").stat().st_size > 0


def test_a_secagg_round_over_the_deployment_engine(federation, bank_files, tmp_path):
    # The SuperNodes of the test above (bank_c's may be dead by now: SecAgg+ then goes on without it).
    port, _ = federation
    cfg = deploy_config(
        tmp_path / "fedlora-secagg", port, "rounds.num_rounds=1", "secagg.enabled=true", "secagg.max_weight=8"
    )
    (r,) = require_complete(main(cfg, quiet=True), "fedlora")["metrics"]["rounds"]
    assert r["secagg"] == {"plain_arrays_seen": 0}
    assert {"bank_a", "bank_b"} <= {b["bank"] for b in r["banks"]}
    assert all(0 < b["samples"] <= 4 and b["bytes_sent"] > 0 for b in r["banks"])
