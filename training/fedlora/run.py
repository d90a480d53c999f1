"""Federated LoRA: banks train one adapter together on Flower, each on data that never leaves it.

Run as:
    kofin fedlora --config configs/fedlora/tiny.yaml          # simulation: 3 banks on this CPU, ~1 min
    kofin fedlora --config configs/fedlora/deployment.yaml    # a SuperLink + one SuperNode per bank

The recipe: validate the config -> start the Flower engine -> the ServerApp (server.py) runs the
rounds, sending the global adapter to the banks' ClientApps (client.py) and aggregating what comes
back (aggregation.py) -> the run directory holds a PEFT adapter that `kofin eval` (and `kofin dpo`
/ `kofin merge`, see README) loads like an SFT adapter, with the rounds in its manifest.

Simulation runs every bank as a virtual SuperNode of Flower's simulation engine (Ray actors:
separate processes, so the server thread of this process never touches a bank's rows).
Deployment submits the same app with `flwr run` to a SuperLink the banks' SuperNodes are
connected to (deploy.py).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from kofin.errors import KofinError
from kofin.offline import apply_offline_env
from kofin.training.fedlora.config import FedLoraConfig


class FedLoraError(KofinError):
    """A federated run that did not complete."""


# Flower phones home unless told not to: usage telemetry (telemetry.flower.ai), and every SuperLink,
# SuperNode and SuperExec asks api.flower.ai for a newer release at start-up. kofin never phones home.
FLOWER_OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def flower_offline() -> None:
    import os

    apply_offline_env()
    os.environ.update(FLOWER_OFFLINE_ENV)


def run_simulation(cfg: FedLoraConfig, *, quiet: bool) -> Path:
    from flwr.simulation import run_simulation as flower_run_simulation

    from kofin.training.fedlora.client import BankData, make_client_app
    from kofin.training.fedlora.ray_local import ray_init_args, start_ray, stop_ray
    from kofin.training.fedlora.server import make_server_app

    banks = {
        i: BankData(b.name, b.data, b.shard, b.max_rows)  # type: ignore[arg-type]  # validated: data set
        for i, b in enumerate(cfg.banks)
    }
    result: list[Path] = []
    backend: dict[str, object] = {
        "client_resources": {"num_cpus": cfg.engine.cpus_per_client, "num_gpus": 0.0},
        "init_args": ray_init_args(cfg, quiet=quiet),
    }
    if quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    scratch = tempfile.TemporaryDirectory(prefix="kofin-fedlora-ray-")
    try:
        start_ray(cfg, Path(scratch.name), quiet=quiet)
        flower_run_simulation(
            server_app=make_server_app(cfg, quiet=quiet, result=result),
            client_app=make_client_app(banks),
            num_supernodes=len(cfg.banks),
            backend_config=backend,  # type: ignore[arg-type]
        )
    except KofinError:
        raise
    except Exception as err:  # Flower wraps the ServerApp's own error; surface it as the cause
        cause = err.__cause__ or err.__context__
        if isinstance(cause, KofinError):
            raise cause from None
        raise FedLoraError(f"Flower's simulation failed: {err}") from err
    finally:
        stop_ray()
        scratch.cleanup()
    if not result:
        raise FedLoraError(
            f"the federated run ended without writing {cfg.output_dir}; see the Flower log above "
            f"(the last completed round stays in {cfg.output_dir}.partial and the same command resumes it)"
        )
    return result[0]


def main(cfg: FedLoraConfig, *, quiet: bool = False) -> Path:
    flower_offline()
    if cfg.engine.kind == "simulation":
        return run_simulation(cfg, quiet=quiet)
    from kofin.training.fedlora.deploy import submit_run

    return submit_run(cfg, quiet=quiet)
