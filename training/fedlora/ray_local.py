"""Ray, the runtime under Flower's simulation engine, kept on this machine and off the network.

Run as: a library; run.py starts Ray with `start_ray` before Flower's simulation and stops it after.
Flower's Ray backend uses an already-initialised Ray as it is, so these settings are the ones in force.

Three things Ray does by default that an air-gapped bank (and the test suite's network guard) refuses:
- it binds its GCS, raylet and agents to the host's routable address (the one that routes towards
  8.8.8.8), opening Ray's unauthenticated ports to the bank's network. Under the network guard the
  runtime_env agent's lookup of that address is refused, the agent exits, the raylet (which
  fate-shares with it) dies and ray.init reports "node timed out during startup" — the crash the
  simulation tests hit on a loaded machine. With Ray's "cluster mode" off its node address is 127.0.0.1;
- its API server (started even with include_dashboard=False) asks the cloud metadata services
  (169.254.169.254, metadata.google.internal) which cloud it runs on, unless the autoscaler config
  ~/ray_bootstrap_config.yaml names the provider. Ray's own processes therefore get a private HOME
  holding one that says `local`; the workers (the banks' ClientApps) get the real HOME back;
- usage statistics (to usage-stats.ray.io) are on unless RAY_USAGE_STATS_ENABLED=0.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from kofin.training.fedlora.config import FedLoraConfig

RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
BOOTSTRAP_CONFIG = "ray_bootstrap_config.yaml"
LOCAL_PROVIDER = "# Written by kofin fedlora: Ray runs on this machine only.\nprovider:\n  type: local\n"


def keep_ray_local() -> None:
    """Before Ray starts: loopback node address, no usage statistics."""
    os.environ.update(RAY_LOCAL_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray read its environment at import, before this process ran kofin fedlora
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def ray_init_args(cfg: FedLoraConfig, *, quiet: bool) -> dict[str, object]:
    args: dict[str, object] = {
        "include_dashboard": False,
        "_node_ip_address": "127.0.0.1",
        "log_to_driver": not quiet,
        "logging_level": logging.WARNING,
    }
    if cfg.engine.num_cpus:
        args["num_cpus"] = cfg.engine.num_cpus
    return args


def start_ray(cfg: FedLoraConfig, scratch: Path, *, quiet: bool) -> None:
    """ray.init on 127.0.0.1; `scratch` (alive until Ray stops) holds the HOME of Ray's own processes."""
    import ray

    keep_ray_local()
    if ray.is_initialized():  # a Ray this process started for something else: use it as Flower would
        return
    home = scratch / "ray-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / BOOTSTRAP_CONFIG).write_text(LOCAL_PROVIDER, encoding="utf-8")
    # Workers get the driver's import path (as Flower's own ray.init does) and the real HOME.
    worker_env = {"PYTHONPATH": os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])}
    real_home = os.environ.get("HOME")
    if real_home is not None:
        worker_env["HOME"] = real_home
    os.environ["HOME"] = str(home)  # only while ray.init spawns Ray's processes, which inherit it
    try:
        ray.init(runtime_env={"env_vars": worker_env}, **ray_init_args(cfg, quiet=quiet))  # type: ignore[arg-type]
    finally:
        if real_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = real_home


def stop_ray() -> None:
    """Flower shuts Ray down when its runtime ends; this covers a simulation that failed before that."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
