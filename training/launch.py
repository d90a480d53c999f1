"""Start `axolotl train` in the axolotl env (or a container) through accelerate / torchrun / python.

The command is exactly what `axolotl train --launcher X` would exec (`accelerate launch ... -m
axolotl.cli.train cfg.yaml`), written out by kofin so that it can be printed by `--dry-run`,
saved as `launch.sh` in the run directory, and extended for multi-node rendezvous.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kofin.errors import KofinError
from kofin.offline import OFFLINE_ENV
from kofin.training.sft_config import Launch

ENTRY = Path(__file__).with_name("axolotl_entry.py")
ENV_VAR = "KOFIN_AXOLOTL_ENV"


class LaunchError(KofinError):
    """The axolotl env is missing, or axolotl rejected the config or failed."""


def axolotl_env(launch: Launch) -> Path:
    """The virtual env holding axolotl: config key, then $KOFIN_AXOLOTL_ENV, then the checkout's .venv-axolotl."""
    if launch.axolotl_env is not None:
        return launch.axolotl_env
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).resolve()
    return Path(__file__).resolve().parents[1] / ".venv-axolotl"


def require_axolotl_env(launch: Launch) -> Path:
    env = axolotl_env(launch)
    if not (env / "bin" / "python").exists() or not (env / "bin" / "axolotl").exists():
        raise LaunchError(
            f"no axolotl env at {env} (expected bin/python and bin/axolotl). Create it with "
            f"`make axolotl-env` (pinned in training/axolotl-requirements.txt), point launch.axolotl_env "
            f"or ${ENV_VAR} at one, or set launch.container to run axolotl from an image."
        )
    return env


@dataclass
class LaunchPlan:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set on top of kofin's own environment

    def shell(self, *, full: bool = True) -> str:
        env = self.env if full else {k: v for k, v in self.env.items() if k not in OFFLINE_ENV}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        return (exports + " " if exports else "") + shlex.join(self.argv)


def plan_launch(launch: Launch, yaml_path: Path, *, cuda: bool, run_dir: Path) -> LaunchPlan:
    """The command line for this host. `cuda` says whether the training processes will see a GPU."""
    world = launch.world_size
    if launch.container:
        prefix, exe = list(launch.container), (lambda name: name)
    else:
        env_bin = require_axolotl_env(launch) / "bin"
        prefix, exe = [], (lambda name: str(env_bin / name))
    # On a CPU host with several processes, axolotl needs kofin's entry (see axolotl_entry.py).
    cpu_ddp = world > 1 and not cuda and not launch.container
    target = [str(ENTRY), "train", str(yaml_path)] if cpu_ddp else ["-m", "axolotl.cli.train", str(yaml_path)]
    if launch.launcher == "python":
        argv = [exe("python"), *target]
    elif launch.launcher == "torchrun":
        argv = [exe("torchrun"), "--nnodes", str(launch.nodes), "--nproc_per_node", str(launch.gpus_per_node)]
        if launch.nodes > 1:
            argv += [
                "--node_rank",
                str(launch.node_rank),
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                str(launch.rdzv_endpoint),
                "--rdzv_id",
                launch.rdzv_id,
            ]
        else:
            argv += ["--standalone"]  # picks a free local port, so parallel jobs do not collide
        argv += target
    else:
        argv = [
            exe("accelerate"),
            "launch",
            "--num_processes",
            str(world),
            "--num_machines",
            str(launch.nodes),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
        if world > 1:
            argv += ["--multi_gpu"]
        if launch.nodes > 1:
            host, _, port = str(launch.rdzv_endpoint).rpartition(":")
            argv += [
                "--machine_rank",
                str(launch.node_rank),
                "--main_process_ip",
                host,
                "--main_process_port",
                port,
                "--rdzv_backend",
                "c10d",
            ]
        argv += target
    env = {
        **OFFLINE_ENV,
        # datasets writes Arrow caches under ~/.cache by default; keep them inside the run.
        "HF_DATASETS_CACHE": str(run_dir / "hf_cache"),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if cpu_ddp:
        env["ACCELERATE_USE_CPU"] = "1"
    if launch.container:
        # `docker run` does not pass the client's environment into the container: set it inside.
        return LaunchPlan(prefix + ["env", *(f"{k}={v}" for k, v in env.items())] + argv, {})
    return LaunchPlan(prefix + argv, env)


def validate_with_axolotl(launch: Launch, yaml_path: Path) -> list[str] | None:
    """axolotl's own schema check of the written YAML, in the axolotl env; no weights are loaded.

    Returns the packages the config needs that the env lacks (flash-attn, deepspeed: extras
    installed on GPU hosts), or None when no local axolotl env exists to check a container run.
    """
    if launch.container and not (axolotl_env(launch) / "bin" / "python").exists():
        return None
    python = require_axolotl_env(launch) / "bin" / "python"
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.run(
        [str(python), str(ENTRY), "validate", str(yaml_path)], capture_output=True, text=True, env=env
    )
    verdict = next((line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")), None)
    if verdict is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LaunchError(f"axolotl's config check did not run ({python}, exit {proc.returncode}):\n{tail}")
    result = json.loads(verdict)
    if not result["ok"]:
        raise LaunchError(f"axolotl rejected {yaml_path}: {result['error']}")
    return result["missing"]


def _die_with_parent() -> None:
    # If kofin itself is killed (even by SIGKILL), its launcher child goes too, instead of
    # training on unobserved. Linux only; elsewhere the child simply outlives kofin.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


RESUME_HINT = "Checkpoints written so far are kept: {cause}, then run the same command to resume."


def run_logged(
    plan: LaunchPlan, log_path: Path, *, echo: bool = True, tool: str = "axolotl", hint: str = RESUME_HINT, view=None
) -> float:
    """Run the plan, tee its output to `log_path` (appended) and the console; return wall seconds.
    With a `view` (e.g. console.AxolotlConsole) the console shows what it makes of the output
    instead of the raw bytes; the log always gets everything. A failure raises LaunchError naming
    `tool`, the log's last lines and `hint` ({cause} filled in)."""
    env = {**os.environ, **plan.env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_path, "ab") as log:
        log.write(f"\n=== kofin launch {time.strftime('%Y-%m-%d %H:%M:%S')}: {plan.shell()}\n".encode())
        proc = subprocess.Popen(
            plan.argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            # stdout=PIPE with the default buffering is a BufferedReader: read1 returns what is there
            assert isinstance(proc.stdout, io.BufferedReader)
            while chunk := proc.stdout.read1(1 << 16):
                log.write(chunk)
                log.flush()
                if echo and view is not None:
                    view.feed(chunk)
                elif echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            code = proc.wait()
            if echo and view is not None:
                view.close()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        cause = "it was stopped by a signal (preemption or a kill)" if code < 0 else "fix the cause shown above"
        raise LaunchError(
            f"{tool} exited with status {code}. Last lines of {log_path}:\n{_tail(log_path)}\n"
            + hint.format(cause=cause)
        )
    return time.time() - start


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_bytes()[-20000:].decode("utf-8", "replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip() and "it/s]" not in line and "s/it]" not in line]
    return "\n".join("    " + line for line in kept[-lines:])
