"""`kofin eval`: a thin command line over `eval/run.py`.

Run as:
    kofin eval --config configs/eval/tiny.yaml [key.path=value ...] [--quiet]
    kofin eval export-lm-eval OUT_DIR [--tasks NAME_OR_YAML ...] [--limit N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors


def run_cli(argv: list[str]) -> int:
    if argv[:1] == ["export-lm-eval"]:
        return export_cli(argv[1:])
    from kofin.eval.config import EvalConfig

    parser = argparse.ArgumentParser(
        prog="kofin eval",
        description="Evaluate models (the embedded tiny model, local model folders, complete run directories incl. "
        "sft/dpo adapters, OpenAI-compatible endpoints) on Korean financial tasks: multiple choice and classification "
        "scored by option log-likelihood and by the generated answer (accuracy, weighted F1), generated answers "
        "(exact match with Korean "
        "number normalisation, token F1, ROUGE-L, BERTScore), RAG (Recall@k, MRR, nDCG, citation precision/recall); "
        "forgetting deltas on the general tasks; report.md/report.html. Re-running skips examples already scored. "
        "`kofin eval export-lm-eval OUT_DIR` writes the multiple-choice tasks for lm-evaluation-harness.",
    )
    add_config_args(parser, EvalConfig, "configs/eval/tiny.yaml", "limit=20")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(EvalConfig, args, "kofin eval")

    def act() -> None:
        from kofin.eval.run import main

        out = main(cfg, quiet=args.quiet)
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        for model, per_task in metrics["results"].items():
            for task, values in per_task.items():
                shown = "  ".join(f"{k} {v:.3f}" for k, v in values.items())
                print(f"{model:<16} {task:<20} {shown}")
        print(f"kofin eval: wrote {out}")

    return run_reporting_errors("kofin eval", act)


def export_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kofin eval export-lm-eval",
        description="Write kofin's multiple-choice tasks as an lm-evaluation-harness --include_path folder "
        "(task YAML + the exact prompts kofin scores); lm-eval's acc/acc_norm then match kofin's.",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument(
        "--tasks", nargs="+", help="bundled task names or task YAML paths (default: every bundled multiple-choice task)"
    )
    parser.add_argument("--limit", type=int, help="only the first N examples of each task")
    args = parser.parse_args(argv)

    def act() -> None:
        from kofin.eval.export import export_lm_eval

        paths = export_lm_eval(args.tasks, args.out_dir, args.limit)
        names = " ".join(p.stem for p in paths)
        print(
            f"kofin eval: wrote {len(paths)} lm-eval tasks to {args.out_dir}\n"
            f"  lm_eval --model hf --model_args pretrained=MODEL --include_path {args.out_dir} "
            f"--tasks {names.replace(' ', ',')}"
        )

    return run_reporting_errors("kofin eval export-lm-eval", act)
