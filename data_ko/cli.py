"""`kofin data`: build SFT/DPO data from a config, or validate an existing JSONL file.

Run as:
    kofin data build     --config configs/data/tiny.yaml [key.path=value ...]   # everything the config enables
    kofin data build-sft --config configs/data/tiny.yaml [key.path=value ...]   # only the sft part
    kofin data build-dpo --config configs/data/tiny.yaml [key.path=value ...]   # only the dpo part
    kofin data validate FILE.jsonl [--kind sft|dpo|auto] [--tokenizer PATH] [--max-seq-len N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kofin.data_ko.config import DataConfig
from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors

EXAMPLE = "configs/data/tiny.yaml"
BUILDS = {"build": None, "build-sft": "sft", "build-dpo": "dpo"}  # action -> the only part it builds
ACTIONS = {
    "build": "build everything the config enables (sft and/or dpo)",
    "build-sft": "build only the sft part of the config",
    "build-dpo": "build only the dpo part of the config",
    "validate": "check an existing SFT or DPO JSONL file (schema, role order, tokens, duplicates, PII) "
    "and print a report",
}


def build_parser() -> argparse.ArgumentParser:
    """`kofin data --help`: the list of actions (each action has its own parser and --help)."""
    parser = argparse.ArgumentParser(
        prog="kofin data",
        description="Build SFT chats (reading comprehension over documents + instruction files) and DPO "
        "preference pairs, validated, PII-scrubbed, deduplicated and split; or validate a JSONL file.",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name in ACTIONS:
        sub.add_parser(name, help=ACTIONS[name], add_help=False)
    return parser


def action_parser(action: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"kofin data {action}", description=ACTIONS[action])
    if action in BUILDS:
        add_config_args(parser, DataConfig, EXAMPLE, "validate.max_seq_len=512")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        return parser
    parser.description = f"{ACTIONS[action]}. Exit status 1 when any row has a schema error."
    parser.add_argument("file", type=Path, metavar="FILE", help="JSONL (or .json/.parquet) file of rows")
    parser.add_argument(
        "--kind", choices=("sft", "dpo", "auto"), default="auto", help="row kind; auto looks at the first row"
    )
    parser.add_argument(
        "--tokenizer", type=Path, metavar="PATH", help="local tokenizer folder; default: kofin's tiny model"
    )
    parser.add_argument("--max-seq-len", type=int, default=2048, metavar="N", help="report rows longer than N tokens")
    parser.add_argument("--no-tokens", action="store_true", help="skip token counting (no tokenizer is loaded)")
    return parser


def run_cli(argv: list[str]) -> int:
    if not argv or argv[0] not in ACTIONS:
        build_parser().parse_args(argv)  # prints the help, or the usage error naming the valid actions
        return 2
    action = argv[0]
    # Intermixed: `--config C --quiet a.b=1 c=2` puts overrides on both sides of an option.
    args = action_parser(action).parse_intermixed_args(argv[1:])
    prog = f"kofin data {action}"
    if action == "validate":
        return _validate(args, prog)
    only = BUILDS[action]
    cfg = load_stage_config(DataConfig, args, prog)
    if only is not None:
        if getattr(cfg, only) is None:
            print(f"{prog}: the config has no '{only}' section; add one or run `kofin data build`", file=sys.stderr)
            return 2
        cfg = cfg.model_copy(update={"dpo" if only == "sft" else "sft": None})

    def act() -> None:
        from kofin.data_ko.run import main

        out = main(cfg, quiet=args.quiet)
        print(f"{prog}: wrote {out}")
        if not args.quiet:
            print(_summary(out))

    return run_reporting_errors(prog, act)


def _validate(args: argparse.Namespace, prog: str) -> int:
    from kofin.data_ko.validate import validate_file

    if args.max_seq_len <= 0:
        print(f"{prog}: --max-seq-len must be > 0 (got {args.max_seq_len})", file=sys.stderr)
        return 2
    result: dict = {}

    def act() -> None:
        result.update(
            validate_file(args.file, args.kind, args.tokenizer, args.max_seq_len, count_tokens=not args.no_tokens)
        )

    code = run_reporting_errors(prog, act)
    if code:
        return code
    print(format_report(result))
    return 1 if result["schema_errors"] else 0


def format_report(report: dict) -> str:
    """The validate report as a person reads it: verdict first, then the numbers."""
    errors = report["schema_errors"]
    lines = [
        f"{report['file']}: {report['rows']} {report['kind']} rows, {report['valid_rows']} valid, "
        f"{report['schema_error_count']} schema errors",
    ]
    if errors:
        lines.append("schema errors (row  field: problem):")
        lines += [f"  {e}" for e in errors]
        if report["schema_error_count"] > len(errors):
            lines.append(f"  ... and {report['schema_error_count'] - len(errors)} more")
    tokens = report.get("tokens")
    if tokens and tokens.get("rows"):
        lines.append(
            f"tokens ({report['tokenizer']}): min {tokens['min']}  mean {tokens['mean']}  p50 {tokens['p50']}  "
            f"p95 {tokens['p95']}  max {tokens['max']}  over {tokens['max_seq_len']}: {tokens['over_max_seq_len']}"
        )
        lines += [f"  too long: {row}" for row in report.get("too_long_rows", [])]
    dup = report["duplicates"]
    lines.append(f"duplicates: {dup['exact']} exact, {dup['near']} near (Jaccard >= {dup['threshold']})")
    pii = report["pii"]
    found = ", ".join(f"{k} {v}" for k, v in pii["by_kind"].items()) or "none"
    lines.append(f"personal data found: {found} (in {pii['rows_changed']} rows; `kofin data build` masks it)")
    lines.append("OK" if not errors else "FAILED: fix the rows above")
    return "\n".join(lines)


def _summary(out) -> str:
    """A few lines an engineer reads before training: rows per file and what validation did."""
    import json

    metrics = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["metrics"]
    lines = ["  " + ", ".join(f"{name}: {n:,} rows" for name, n in metrics.get("rows", {}).items())]
    for part in ("sft", "dpo"):
        m = metrics.get(part)
        if not m:
            continue
        pii = ", ".join(f"{k} {v}" for k, v in m.get("pii_masked", {}).items()) or "none"
        dup = m.get("duplicates_removed", {})
        tok = m.get("tokens", {})
        lines.append(
            f"  {part}: PII masked: {pii}; duplicates removed: {dup.get('exact', 0)} exact, "
            f"{dup.get('near', 0)} near; tokens p50 {tok.get('p50')} / p95 {tok.get('p95')} / max "
            f"{tok.get('max')}; too long dropped: {m.get('too_long_dropped', 0)}; "
            f"eval rows leaking from train removed: {m.get('leakage_removed', 0)}"
        )
    lines.append(f"  details: {out / 'report.json'}")
    return "\n".join(lines)
