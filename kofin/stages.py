"""The one record of what a kofin stage is: its name, command line, config model, `main` and help.

Run as: a library. `kofin.cli` builds its subcommands from `STAGES` (plus the commands that are
no stage: ask, serve, audit, pipeline), and `kofin.pipeline` validates and runs steps through the
same records, so a stage is added, renamed or re-pointed in one place.

Every stage's `main` has one signature, `main(cfg, *, quiet: bool = False) -> result`: the
validated config, and one display flag that is never part of the config (DESIGN: a config's
digest must not change with how it was run). Targets are "pkg.module:name" strings imported only
when used, so `kofin --help` loads no torch, and a stage whose module is not installed (or not
written yet) still lists.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class Stage(NamedTuple):
    name: str  # `kofin <name>`, a pipeline step's `stage:`, the manifest's "stage"
    cli: str  # "pkg.module:function(argv) -> int"
    config: str  # "pkg.module:Model": what `--config configs/<stage>/*.yaml` validates
    main: str  # "pkg.module:main": main(cfg, *, quiet=False)
    help: str
    alone: str = ""  # how to run one step by hand, when it is not `kofin <name> --config YAML`


# The stages whose run is a LoRA adapter on a base model, trained on pooled data or federated: the
# same kind of run to `kofin dpo` (sft_run), `kofin merge` (tuned_run, or the run a DPO adapter was
# trained on top of) and `kofin eval`.
ADAPTER_STAGES = ("sft", "fedlora")

STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "tiny",
            "kofin.tiny_cli:run_cli",
            "kofin.tiny:TinyConfig",
            "kofin.tiny:main",
            "build the embedded tiny EEVE-shaped model and Korean tokenizer",
            alone="kofin tiny build {output_dir}",
        ),
        Stage(
            "data",
            "kofin.data_ko.cli:run_cli",
            "kofin.data_ko.config:DataConfig",
            "kofin.data_ko.run:main",
            "build and validate SFT / DPO data (reading comprehension, PII scrub, dedupe)",
            alone="kofin data build --config {config}",
        ),
        Stage(
            "sft",
            "kofin.training.cli:sft_cli",
            "kofin.training.sft_config:SftConfig",
            "kofin.training.sft:main",
            "domain SFT through axolotl (QLoRA r=256 on EEVE, DDP; LoRA, DoRA, rsLoRA)",
        ),
        Stage(
            "fedlora",
            "kofin.training.fedlora.cli:run_cli",
            "kofin.training.fedlora.config:FedLoraConfig",
            "kofin.training.fedlora.run:main",
            "federated LoRA across institutions on Flower (data stays with each bank; FedAvg of adapters)",
        ),
        Stage(
            "dpo",
            "kofin.training.cli:dpo_cli",
            "kofin.training.dpo_config:DpoConfig",
            "kofin.training.dpo:main",
            "preference tuning with DPO (unsloth on GPU, TRL otherwise)",
        ),
        Stage(
            "merge",
            "kofin.merge.cli:merge_cli",
            "kofin.merge.config:MergeConfig",
            "kofin.merge.run:main",
            "merge the tuned model with an instruct model through mergekit (checked, offline)",
        ),
        Stage(
            "ingest",
            "kofin.serve.cli:ingest_cli",
            "kofin.serve.ingest:IngestConfig",
            "kofin.serve.ingest:main",
            "ingest documents into a knowledge base (Kiwi BM25 + FAISS hybrid index, incremental)",
        ),
        Stage(
            "eval",
            "kofin.eval.cli:run_cli",
            "kofin.eval.config:EvalConfig",
            "kofin.eval.run:main",
            "evaluate models on Korean financial tasks (MCQ, classification, QA, RAG, forgetting) and write the "
            "eval report",
        ),
    )
}


def stage(name: str) -> Stage:
    """The record of stage `name`; a KeyError names the stages there are."""
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; stages are {', '.join(STAGES)}") from None


def load_target(target: str) -> Any:
    """The object `pkg.module:name` names (a CLI function, a config model, a stage's main)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_config_model(name: str) -> Any:
    """The pydantic model a stage's config validates against."""
    return load_target(stage(name).config)


def stage_main(name: str) -> Any:
    """The stage's `main(cfg, *, quiet=False)`."""
    return load_target(stage(name).main)
