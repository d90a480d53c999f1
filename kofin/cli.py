"""The `kofin` command: one subcommand per stage.

Run as:
    kofin --help
    kofin tiny build OUT
    kofin data build --config configs/data/tiny.yaml [key.path=value ...]

The table below maps each subcommand to the module that implements it. Modules are imported only
when their subcommand runs, so `kofin --help` never loads torch or transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NamedTuple

from kofin.offline import apply_offline_env


class Command(NamedTuple):
    module: str  # "pkg.module:function(argv) -> int"
    help: str
    config: str = ""  # "pkg.module:Model" that validates configs/<stage>/*.yaml


COMMANDS: dict[str, Command] = {
    "tiny": Command(
        "kofin.tiny_cli:run_cli",
        "build the embedded tiny EEVE-shaped model and Korean tokenizer",
        config="kofin.tiny:TinyConfig",
    ),
    "data": Command(
        "kofin.data_ko.cli:run_cli",
        "build and validate SFT / DPO data (reading comprehension, PII scrub, dedupe)",
        config="kofin.data_ko.config:DataConfig",
    ),
    "sft": Command(
        "kofin.training.cli:sft_cli",
        "domain SFT through axolotl (QLoRA r=256 on EEVE, DDP)",
        config="kofin.training.sft_config:SftConfig",
    ),
    "dpo": Command(
        "kofin.training.cli:dpo_cli",
        "preference tuning with DPO (unsloth on GPU, TRL otherwise)",
        config="kofin.training.dpo_config:DpoConfig",
    ),
    "merge": Command(
        "kofin.merge.cli:merge_cli",
        "merge the tuned model with an instruct model through mergekit (checked, offline)",
        config="kofin.merge.config:MergeConfig",
    ),
    "eval": Command(
        "kofin.eval.cli:run_cli",
        "evaluate models on Korean financial tasks (MCQ, classification, QA, RAG, forgetting) and write the eval report",
        config="kofin.eval.config:EvalConfig",
    ),
    "ingest": Command(
        "kofin.serve.cli:ingest_cli",
        "ingest documents into a knowledge base (Kiwi BM25 + FAISS hybrid index, incremental)",
        config="kofin.serve.ingest:IngestConfig",
    ),
    "ask": Command("kofin.serve.cli:ask_cli", "answer questions from a knowledge base with verified citations"),
    "serve": Command(
        "kofin.serve.cli:serve_cli",
        "serve the Gradio chat for bank staff (login, cited streaming answers, document admin, audit log)",
        config="kofin.serve.serve_config:ServeConfig",
    ),
    "audit": Command("kofin.serve.cli:audit_cli", "verify the hash-chained audit log of kofin ask / serve"),
    "pipeline": Command(
        "kofin.pipeline_cli:run_cli",
        "run the stages of a pipeline YAML in order, skipping finished ones",
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
    return int(load_target(cmd.module)(rest))


def load_target(target: str) -> Any:
    """The object `pkg.module:name` names (a CLI function, a config model, a stage's main)."""
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


if __name__ == "__main__":
    sys.exit(main())
