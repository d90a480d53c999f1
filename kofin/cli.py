"""The `kofin` command: one subcommand per stage.

Run as:
    kofin --help
    kofin tiny build OUT
    kofin data build --config configs/data/tiny.yaml [key.path=value ...]

The stages' subcommands come from their records in kofin/stages.py; the table below adds the
commands that are no stage. Modules are imported only when their subcommand runs, so
`kofin --help` never loads torch or transformers.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

from kofin.offline import apply_offline_env
from kofin.stages import STAGES
from kofin.stages import load_target as load_target  # re-exported: callers import it from here


class Command(NamedTuple):
    module: str  # "pkg.module:function(argv) -> int"
    help: str
    config: str = ""  # "pkg.module:Model" that validates configs/<stage>/*.yaml


# The stages come from their one record (kofin.stages); the rest are commands that are no stage.
COMMANDS: dict[str, Command] = {
    **{s.name: Command(s.cli, s.help, config=s.config) for s in STAGES.values()},
    "ask": Command("kofin.serve.cli:ask_cli", "answer questions from a knowledge base with verified citations"),
    "serve": Command(
        "kofin.serve.cli:serve_cli",
        "serve the Gradio chat for bank staff (login, cited streaming answers, document admin, audit log)",
        config="kofin.serve.serve_config:ServeConfig",
    ),
    "audit": Command("kofin.serve.cli:audit_cli", "verify the hash-chained audit log of kofin ask / serve"),
    "pipeline": Command(
        "kofin.pipeline_cli:run_cli",
        "run the stages of a pipeline YAML in order (with matrix sweeps), skipping finished ones",
        config="kofin.pipeline:PipelineConfig",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kofin",
        description="On-prem Korean financial assistant: data -> SFT -> DPO -> merge, cited RAG chat, eval reports.",
        epilog="Every stage reads `--config configs/<stage>/<name>.yaml` plus `key.path=value` overrides. "
        "`kofin <command> --help` lists that stage's options. Everything runs offline.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, cmd in COMMANDS.items():
        # add_help=False: the stage's own parser answers `kofin <stage> --help`.
        sub.add_parser(name, help=cmd.help, add_help=False)
    parser.add_argument("--version", action="store_true", help="print the kofin version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from kofin import __version__

        print(f"kofin {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        parser.parse_args(argv)  # prints argparse's usage error with the valid choices
        return 2
    module = cmd.module.partition(":")[0]
    try:
        run = load_target(cmd.module)
    except ModuleNotFoundError as err:
        if not err.name or not module.startswith(err.name):
            raise  # a dependency of the command is missing: its own message says which
        print(f"kofin {name}: this checkout has no {module} yet ({err})", file=sys.stderr)
        return 2
    return int(run(rest))


if __name__ == "__main__":
    sys.exit(main())
