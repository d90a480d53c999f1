"""`kofin eval`: a thin command line over `eval/run.py`.

Run as:
    kofin eval --config configs/eval/tiny.yaml [key.path=value ...] [--quiet]
"""

from __future__ import annotations

import argparse
import json

from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors


def run_cli(argv: list[str]) -> int:
    from kofin.eval.config import EvalConfig

    parser = argparse.ArgumentParser(
        prog="kofin eval",
        description="Evaluate models (the embedded tiny model, local model folders, complete run directories) on "
        "Korean financial tasks: multiple choice scored by option log-likelihood and by the generated answer, "
        "classification (accuracy, weighted F1), numeric QA (exact match with Korean number normalisation, "
        "token F1, ROUGE-L); forgetting deltas on the general tasks. Re-running skips examples already scored.",
    )
    add_config_args(parser, EvalConfig, "configs/eval/tiny.yaml", "limit=20")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(EvalConfig, args, "kofin eval")
    if args.quiet:
        cfg = cfg.model_copy(update={"progress": False})

    def act() -> None:
        from kofin.eval.run import main

        out = main(cfg)
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        for model, per_task in metrics["results"].items():
            for task, values in per_task.items():
                shown = "  ".join(f"{k} {v:.3f}" for k, v in values.items())
                print(f"{model:<16} {task:<20} {shown}")
        print(f"kofin eval: wrote {out}")

    return run_reporting_errors("kofin eval", act)
