"""Merge memory and time at EEVE's width: per-phase peak RSS of `kofin merge` next to the models' sizes.

Run as:
    .venv/bin/python benchmarks/merge_eeve_width.py --layers 2              # CPU, ~1 GB per model in bf16
    .venv/bin/python benchmarks/merge_eeve_width.py --layers 8 --method ties

Builds two random-init models with EEVE-Korean-10.8B's block (hidden 4096, MLP 14336, 32 query /
8 KV heads) and fewer layers (seeds 0 and 1, the same tokenizer), a LoRA adapter run on the first
(random non-zero B, as after training; r=16 on all linear layers), then runs `kofin merge` in its own process
and writes the manifest's per-phase peak RSS and anonymous memory, wall times and perplexities
to benchmarks/results/merge_*.json. mergekit's tensors (4096 x 14336 MLP matrices, 117 MB each in
bf16) are the real size; only the layer count is smaller.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sft_eeve_width import KOFIN, ROOT, sh  # this folder: the SFT benchmark's command runner

from kofin import manifest_keys as keys
from kofin.rundir import MANIFEST

sys.path.insert(0, str(ROOT / "tests"))  # the tests' adapter-run builder: a real peft adapter in a kofin run dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2, help="decoder layers at EEVE's width (EEVE has 48)")
    ap.add_argument(
        "--method", default="slerp", choices=("slerp", "linear", "ties", "dare_ties", "task_arithmetic", "model_stock")
    )
    ap.add_argument("--shard", default="500M", help="options.out_shard_size")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-merge")
    args = ap.parse_args()

    from merge_fixtures import adapter_run

    models = []
    for seed in (0, 1):
        model = args.work / f"eeve-width-{args.layers}l-seed{seed}"
        if not (model / "COMPLETE").exists():
            sh(
                *KOFIN,
                "tiny",
                "build",
                str(model),
                f"seed={seed}",
                f"num_hidden_layers={args.layers}",
                "hidden_size=4096",
                "intermediate_size=14336",
                "num_attention_heads=32",
                "num_key_value_heads=8",
            )
        models.append(model)
    tuned = args.work / f"sft-{args.layers}l"
    if not (tuned / "COMPLETE").exists():
        adapter_run(tuned, models[0], r=16)
    out = args.work / f"merge-{args.method}-{args.layers}l"
    params = {"slerp": ["parameters={t: [0, 0.5, 0.3, 0.7, 1]}"], "model_stock": ["parameters={}"]}.get(
        args.method,
        [
            "parameters={}",
            "tuned_parameters={weight: 0.5, density: 0.5}",
            "models.0.parameters={weight: 0.5, density: 0.5}",
        ],
    )
    start = time.time()
    sh(
        *KOFIN,
        "merge",
        "--config",
        "configs/merge/tiny.yaml",
        f"output_dir={out}",
        f"tuned_run={tuned}",
        f"models.0.path={models[1]}",
        "models.0.tiny_seed=null",
        f"method={args.method}",
        *params,
        f"options.out_shard_size={args.shard}",
        "checks.probe_max_tokens=128",
    )
    manifest = json.loads((out / MANIFEST).read_text())
    m = manifest[keys.METRICS]
    mb = {k: round(v / 2**20, 1) for k, v in m["model_bytes"].items()}
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": manifest["host"],
        "shape": {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "layers": args.layers},
        "method": args.method,
        "parameters": m["parameters"],
        "model_mb": mb,
        "two_models_mb": round(mb["tuned"] + mb["models.0"], 1),
        "phases": m["phases"],
        "peak_rss_mb_process": manifest[keys.PEAK_RSS_MB]["self"],
        "perplexity": m["perplexity"],
        "wall_s": round(time.time() - start, 1),
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"merge_{args.method}_{args.layers}l_shard{args.shard}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
