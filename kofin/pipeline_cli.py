"""`kofin pipeline`: run the stages named in a pipeline YAML, skipping finished ones.

Run as:
    kofin pipeline --config configs/pipeline/tiny.yaml
    kofin pipeline --config configs/pipeline/tiny.yaml --dry-run            # what would run, and why
    kofin pipeline --config configs/pipeline/tiny.yaml --force sft          # re-run sft (and what it changes)
    kofin pipeline --config configs/pipeline/tiny.yaml sft.training.max_steps=5
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kofin.config import load_config
from kofin.stage_cli import config_help, run_reporting_errors

PROG = "kofin pipeline"


def run_cli(argv: list[str]) -> int:
    from kofin.pipeline import PipelineConfig

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the stages of a pipeline YAML in order (tiny, data, sft, dpo, merge, ingest, eval). "
        "A stage whose output directory already holds a complete run of the same config, with inputs "
        "unchanged since, is skipped; so a re-run after a failure resumes at the failed stage.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=config_help(PipelineConfig) + "\n\noverrides: STEP.key.path=VALUE, e.g. sft.training.max_steps=5",
    )
    parser.add_argument(
        "--config", type=Path, metavar="YAML", required=True, help="pipeline YAML, e.g. configs/pipeline/tiny.yaml"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate every step's config and say which steps would run and why"
    )
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STEP",
        help="run STEP even if up to date (repeatable; 'all' for every step)",
    )
    parser.add_argument("--quiet", action="store_true", help="less output from the stages themselves")
    parser.add_argument("overrides", nargs="*", metavar="STEP.KEY=VALUE", help="override a step's config key")
    args = parser.parse_intermixed_args(argv)

    def act() -> None:
        from kofin.pipeline import main

        cfg = load_config(PipelineConfig, args.config)
        records = main(
            cfg, args.config, overrides=args.overrides, force=args.force, dry_run=args.dry_run, quiet=args.quiet
        )
        ran = sum(r["status"] == "ran" for r in records)
        skipped = sum(r["status"] == "skipped" for r in records)
        print(f"{PROG}: {ran} ran, {skipped} up to date" + (" (dry run: nothing was run)" if args.dry_run else ""))
        width = max([10, *(len(r["name"]) for r in records)])  # sweep arms have long names (sft-dora-maglr)
        for r in records:
            print(f"  {r['name']:<{width}} {r['status']:<10} {r['output_dir']}")

    return run_reporting_errors(PROG, act)
