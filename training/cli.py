"""`kofin sft` and `kofin dpo`: thin command lines over `training/sft.py` and `training/dpo.py`.

Run as:
    kofin sft --config configs/sft/tiny.yaml [key.path=value ...] [--dry-run] [--quiet]
    kofin dpo --config configs/dpo/tiny.yaml [key.path=value ...] [--quiet]
"""

from __future__ import annotations

import argparse
import sys

import yaml

from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors


def sft_cli(argv: list[str]) -> int:
    from kofin.training.sft_config import SftConfig

    parser = argparse.ArgumentParser(
        prog="kofin sft",
        description="Domain SFT through axolotl: writes the axolotl YAML from this config, validates it with "
        "axolotl's schema, and runs `axolotl train` in the axolotl env through the configured launcher. "
        "Re-running a killed run with the same config resumes from its last complete checkpoint.",
    )
    add_config_args(parser, SftConfig, "configs/sft/tiny.yaml", "lora.r=16")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the axolotl YAML, launch command, trainable parameters and per-GPU memory "
        "estimate; load no weights and launch nothing",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not echo axolotl's output (it is still in logs/train.log)"
    )
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(SftConfig, args, "kofin sft")

    def act() -> None:
        from kofin.training import sft

        if args.dry_run:
            print(
                "kofin sft: planning; axolotl checks the YAML with its own schema in its env (~10-20 s) ...",
                file=sys.stderr,
                flush=True,
            )
            plan, missing = sft.dry_run(cfg)
            checked = (
                "not checked: no local axolotl env for this container run"
                if missing is None
                else "checked with axolotl's schema"
            )
            print(f"# axolotl YAML ({checked})")
            print(yaml.safe_dump(plan.axolotl, allow_unicode=True, sort_keys=False))
            print(plan.describe())
            for need in missing or []:
                print(f"note: this axolotl env lacks what the run needs: {need}; install it on the GPU host")
            for warning in plan.warnings:
                print(f"warning: {warning}")
            print("\ndry run: nothing was loaded or launched.")
            return
        out = sft.main(cfg, quiet=args.quiet)
        print(f"kofin sft: wrote {out}")

    return run_reporting_errors("kofin sft", act)


def dpo_cli(argv: list[str]) -> int:
    from kofin.training.dpo_config import DpoConfig

    parser = argparse.ArgumentParser(
        prog="kofin dpo",
        description="Preference tuning with DPO on top of an SFT run: unsloth (FastLanguageModel + TRL DPOTrainer) "
        "where CUDA and unsloth are present, the same TRL recipe with PEFT otherwise.",
    )
    add_config_args(parser, DpoConfig, "configs/dpo/tiny.yaml", "training.beta=0.05")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(DpoConfig, args, "kofin dpo")

    def act() -> None:
        from kofin.training import dpo

        out = dpo.main(cfg, quiet=args.quiet)
        print(f"kofin dpo: wrote {out}")

    return run_reporting_errors("kofin dpo", act)
