"""`kofin merge`: a thin command line over `merge/run.py`.

Run as:
    kofin merge --config configs/merge/tiny.yaml [key.path=value ...]
"""

from __future__ import annotations

import argparse

from kofin.stage_cli import add_config_args, load_stage_config, run_reporting_errors


def merge_cli(argv: list[str]) -> int:
    from kofin.merge.config import MergeConfig

    parser = argparse.ArgumentParser(
        prog="kofin merge",
        description="Merge a DPO/SFT run with other models through mergekit: the adapter is folded into the "
        "16-bit base, then mergekit (slerp, linear, ties, dare_ties, task_arithmetic, model_stock) merges the "
        "models lazily, offline. Compatibility is checked before any tensor is read; the merged model is checked "
        "for missing tensors and NaN/Inf, loaded, asked to generate, and probed for perplexity with its parents.",
    )
    add_config_args(parser, MergeConfig, "configs/merge/tiny.yaml", "method=linear")
    args = parser.parse_intermixed_args(argv)
    cfg = load_stage_config(MergeConfig, args, "kofin merge")

    def act() -> None:
        import json

        from kofin import manifest_keys as keys
        from kofin.merge.run import main
        from kofin.rundir import MANIFEST

        out = main(cfg)
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        m = manifest[keys.METRICS]
        ppl = ", ".join(f"{k} {v:.2f}" for k, v in m["perplexity"].items())
        print(
            f"kofin merge: wrote {out}/merged ({m['method']}); perplexity on held-out text: {ppl}; "
            f"peak RSS {manifest[keys.PEAK_RSS_MB]['self']:.0f} MiB"
        )

    return run_reporting_errors("kofin merge", act)
