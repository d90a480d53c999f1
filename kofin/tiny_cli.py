"""`kofin tiny`: build the embedded tiny EEVE-shaped model.

Run as:
    kofin tiny build OUT [num_hidden_layers=2 hidden_size=64 seed=1 ...]
    kofin tiny path        # where the default model lives (built on first use)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kofin.config import load_config
from kofin.stage_cli import config_help, run_reporting_errors

PROG = "kofin tiny"


def run_cli(argv: list[str]) -> int:
    from kofin.tiny import TinyConfig

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build the embedded tiny EEVE-shaped LlamaForCausalLM and its Korean BPE tokenizer "
        "(deterministic: same seed and corpus -> same weights).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=config_help(TinyConfig),
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="build the model into OUT (a run directory)")
    build.add_argument("out", type=Path, metavar="OUT")
    build.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="shape overrides, e.g. num_hidden_layers=2")
    sub.add_parser("path", help="print the default tiny model's path, building it if missing")
    args = parser.parse_args(argv)

    def act() -> None:
        from kofin.tiny import build_tiny_model, default_tiny_model

        if args.action == "path":
            print(default_tiny_model())
            return
        cfg = load_config(TinyConfig, None, [f"output_dir={args.out}", *args.overrides])
        out = build_tiny_model(cfg)
        manifest = json.loads((out / "manifest.json").read_text())
        m = manifest["metrics"]
        print(
            f"built {out}\n  {m['parameters']:,} parameters, tokenizer vocab {m['tokenizer_vocab']}, "
            f"{manifest['wall_time_s']:.1f} s\n  model.safetensors sha256 "
            f"{manifest['outputs']['model.safetensors']['sha256']}"
        )

    return run_reporting_errors(PROG, act)
