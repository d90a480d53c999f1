"""SFT throughput and memory at EEVE's width, measured through `kofin sft` (real axolotl), next to
the dry-run estimate.

Run as:
    .venv/bin/python benchmarks/sft_eeve_width.py --layers 8 --seq-len 2048 --steps 20   # on a GPU host
    # CPU smoke:
    .venv/bin/python benchmarks/sft_eeve_width.py --layers 1 --seq-len 256 --steps 2 --r 16 --precision fp32

The model is EEVE-Korean-10.8B's block (hidden 4096, MLP 14336, 32 query / 8 KV heads), random
init, with fewer layers so it fits anywhere; the tokenizer is kofin's Korean BPE (vocab ~7.6k,
not EEVE's 40,960, so logits are smaller than the real model's). The result is one JSON file
under benchmarks/results/ with the measured numbers and the estimate side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KOFIN = [sys.executable, "-m", "kofin.cli"]


def sh(*argv: str) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=ROOT)


def result_from_manifest(manifest: dict, args: argparse.Namespace, *, wall_s: float) -> dict:
    """The benchmark's record from a `kofin sft` manifest; the metric names are sft's own (kofin.manifest_keys)."""
    from kofin import manifest_keys as keys

    m = manifest[keys.METRICS]
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": manifest[keys.HOST],
        "shape": {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "layers": args.layers},
        "method": args.method,
        "r": args.r,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "precision": args.precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": m[keys.STEPS],
        "trainable_params": m[keys.TRAINABLE_PARAMS],
        "tokens_per_s": m[keys.TOKENS_PER_S],
        "peak_gpu_memory_gib_rank0_measured": m[keys.PEAK_GPU_MEMORY_GIB_RANK0],
        "memory_estimate_gib_per_gpu": m[keys.MEMORY_ESTIMATE_GIB_PER_GPU],
        "peak_rss_mb": manifest[keys.PEAK_RSS_MB],
        "wall_s": round(wall_s, 1),
        "loss_first": m[keys.LOSS_FIRST],
        "loss_last": m[keys.LOSS_LAST],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8, help="decoder layers at EEVE's width (EEVE has 48)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--r", type=int, default=256, help="LoRA rank (reference recipe: 256)")
    ap.add_argument("--method", default="qlora")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-sft")
    return ap.parse_args(argv)


def main() -> int:
    args = parse_args()

    model = args.work / f"eeve-width-{args.layers}l"
    if not (model / "COMPLETE").exists():
        sh(
            *KOFIN,
            "tiny",
            "build",
            str(model),
            f"num_hidden_layers={args.layers}",
            "hidden_size=4096",
            "intermediate_size=14336",
            "num_attention_heads=32",
            "num_key_value_heads=8",
        )
    data = args.work / "data"
    if not (data / "COMPLETE").exists():
        # Raw text comes only from documents in the train split, so keep the chats' default length cap.
        sh(*KOFIN, "data", "build-sft", "--config", "configs/data/tiny.yaml", f"output_dir={data}", "--quiet")
    out = args.work / f"sft-{args.method}-r{args.r}-{args.layers}l-s{args.seq_len}"
    overrides = [
        # Raw text: axolotl cuts it into sequence_len chunks, so tokens/s is measured at that length.
        f"output_dir={out}",
        f"base_model={model}",
        f"datasets=[{{path: {data}, type: completion}}]",
        f"method={args.method}",
        f"lora.r={args.r}",
        f"lora.alpha={2 * args.r}",
        f"training.sequence_len={args.seq_len}",
        f"training.micro_batch_size={args.micro_batch}",
        f"training.max_steps={args.steps}",
        f"training.save_steps={args.steps}",
        f"training.precision={args.precision}",
        f"training.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
        "training.flash_attention=false",
        "launch.launcher=python",
    ]
    start = time.time()
    sh(*KOFIN, "sft", "--config", "configs/sft/tiny.yaml", "--quiet", *overrides)
    manifest = json.loads((out / "manifest.json").read_text())
    result = result_from_manifest(manifest, args, wall_s=time.time() - start)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"sft_eeve_width-{args.method}-r{args.r}-{args.layers}l-s{args.seq_len}-{result['when'][:10]}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
