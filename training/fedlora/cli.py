"""`kofin fedlora`: thin command line over training/fedlora/run.py.

Run as:
    kofin fedlora --config configs/fedlora/tiny.yaml [key.path=value ...] [--quiet]
    kofin fedlora supernode --bank bank_a --data /srv/chats.jsonl --superlink 10.0.0.5:9093 [--insecure]
"""

from __future__ import annotations

import argparse

from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors


def run_cli(argv: list[str]) -> int:
    if argv[:1] == ["supernode"]:
        from kofin.training.fedlora.deploy import supernode_cli

        return supernode_cli(argv[1:])
    from kofin.training.fedlora.config import FedLoraConfig

    parser = argparse.ArgumentParser(
        prog="kofin fedlora",
        description="Federated LoRA on Flower: every bank trains the global adapter on its own data, which never "
        "leaves it; the server aggregates adapters only. engine.kind simulation runs the banks on this machine; "
        "deployment submits the run to a SuperLink the banks' SuperNodes are connected to (start a bank with "
        "`kofin fedlora supernode --help`). Re-running a killed run with the same config resumes after its last "
        "completed round.",
    )
    add_config_args(parser, FedLoraConfig, "configs/fedlora/tiny.yaml", "rounds.num_rounds=5")
    parser.add_argument("--quiet", action="store_true", help="no per-round lines and no Flower/Ray log output")
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(FedLoraConfig, args, "kofin fedlora")

    def act() -> None:
        from kofin.training.fedlora.run import main

        out = main(cfg, quiet=args.quiet)
        print(f"kofin fedlora: wrote {out}")

    return run_reporting_errors("kofin fedlora", act)
