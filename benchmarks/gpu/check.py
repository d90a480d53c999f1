"""The prepared one-GPU check of the reference recipe's GPU paths (issue 17), as one JSON record.

Run as:
    bash benchmarks/gpu_check.sh                  # on the H200: sets up the env, runs this, < 8 min
    python benchmarks/gpu/check.py --toy --device cpu --tokenizer DIR --pairs FILE --out x.json   # CPU, toy width

What it measures, on random-init models built here (no weights are downloaded or carried):
  sft:  QLoRA r=256 on all linears of EEVE-width models (hidden 4096, MLP 14336, 32/8 heads, vocab
        40960) at 2 and 4 layers, packed 4096-token rows (SDPA, block-diagonal mask), checkpointing, fp32 AdamW, bf16:
        tokens/s and peak memory, extrapolated linearly in layers to EEVE's 48 and set beside
        `kofin sft --dry-run`'s estimate (training/memory.py, loaded by path: kofin need not be installed).
  dpo:  training/dpo_recipe.py, the file `kofin dpo` runs, on a stacked r=256 adapter over the
        2-layer model, once with backend unsloth (its own env's python) and once with TRL, same
        pairs: tokens/s, peak memory and the fraction of adapter elements changed.
  axolotl: not run here: its wheels and pins do not fit the 64 MiB carried to the device.
This file imports torch, transformers and PEFT only (and the two repo files above by path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EEVE_WIDTH = {"hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8, "vocab": 40960}
TOY_WIDTH = {"hidden": 64, "intermediate": 224, "heads": 4, "kv_heads": 1, "vocab": 8192}
EEVE_LAYERS = 48
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GIB = 2**30


def load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


memory = load_by_path("kofin_memory", ROOT / "training" / "memory.py")
recipe = load_by_path("kofin_dpo_recipe", ROOT / "training" / "dpo_recipe.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="2,4", help="decoder layer counts for the SFT measurement (two or more)")
    ap.add_argument("--steps", type=int, default=3, help="timed SFT optimizer steps per model (after one warm-up)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--r", type=int, default=256, help="LoRA rank (reference recipe: 256)")
    ap.add_argument("--dpo-steps", type=int, default=2)
    ap.add_argument("--dpo-max-length", type=int, default=1024)
    ap.add_argument("--toy", action="store_true", help="toy width (hidden 64) instead of EEVE's: for CPU checks")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument(
        "--tokenizer", type=Path, required=True, help="a tokenizer folder with a chat template (kofin's tiny one)"
    )
    ap.add_argument("--pairs", type=Path, required=True, help="preference pairs JSONL {prompt, chosen, rejected}")
    ap.add_argument("--unsloth-python", default=sys.executable, help="python of the env holding unsloth")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: sft, dpo_unsloth, dpo_trl")
    ap.add_argument("--work", type=Path, default=Path("/tmp/kofin-gpu-check"))
    ap.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    args = ap.parse_args(argv)
    args.layers = [int(n) for n in str(args.layers).split(",")]
    if len(args.layers) < 2 or len(set(args.layers)) != len(args.layers):
        ap.error("--layers needs two or more different layer counts, e.g. 2,4 (the extrapolation fits a line)")
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = args.skip - {"sft", "dpo_unsloth", "dpo_trl"}
    if unknown:
        ap.error(f"--skip: unknown part(s) {sorted(unknown)}; choose from sft, dpo_unsloth, dpo_trl")
    if args.toy and args.seq_len == 4096:
        args.seq_len = 128
    return args


# ---------------------------------------------------------------- models


def build_model(
    width: dict[str, int], layers: int, out: Path, tokenizer: Path, *, seed: int = 0, device: str = "cpu"
) -> Path:
    """A random-init Llama of this width, initialised on `device` (seconds on a GPU), saved in bf16
    with the tokenizer beside it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    config = LlamaConfig(
        hidden_size=width["hidden"],
        intermediate_size=width["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=width["heads"],
        num_key_value_heads=width["kv_heads"],
        vocab_size=max(width["vocab"], len(tok)),
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    del model
    tok.save_pretrained(str(out))
    return out


def stacked_adapter(base: Path, r: int, out: Path, *, seed: int = 0) -> Path:
    """A stand-in SFT run: an r-rank all-linear adapter with non-zero B (as after SFT), dropout 0."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "adapter_config.json").is_file():
        return out
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
    model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


# ---------------------------------------------------------------- SFT: QLoRA steps


def sft_measure(model_dir: Path, layers: int, width: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_quant_storage=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quant,
        dtype=torch.bfloat16,
        device_map={"": args.device},
        attn_implementation="sdpa",
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(
        model,
        LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=cuda)
    gen = torch.Generator().manual_seed(layers)
    vocab = model.config.vocab_size

    def packed_row() -> tuple[torch.Tensor, torch.Tensor]:
        """Six documents of random length packed into one row, as axolotl's sample packing with SDPA
        does it: positions restart at each document and a block-diagonal causal mask (bool, 1 x 1 x
        s x s) keeps documents apart (transformers does not derive it from the positions)."""
        cuts = sorted(torch.randint(1, args.seq_len, (5,), generator=gen).tolist())
        lengths = [b - a for a, b in zip([0, *cuts], [*cuts, args.seq_len], strict=True) if b > a]
        positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        doc = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
        causal = torch.ones(args.seq_len, args.seq_len, dtype=torch.bool).tril()
        return positions, ((doc[:, None] == doc[None, :]) & causal)[None, None]

    def step() -> float:
        ids = torch.randint(3, vocab, (1, args.seq_len), generator=gen).to(args.device)
        positions, mask = (t.to(args.device) for t in packed_row())
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, position_ids=positions, attention_mask=mask, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up: kernels, allocator, optimizer states
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    shape = memory.LlamaShape(
        hidden=width["hidden"],
        intermediate=width["intermediate"],
        layers=layers,
        heads=width["heads"],
        kv_heads=width["kv_heads"],
        vocab=vocab,
    )
    est = memory.estimate_memory(
        shape, method="qlora", r=args.r, seq_len=args.seq_len, micro_batch=1, gradient_checkpointing=True, world_size=1
    )
    out = {
        "layers": layers,
        "trainable_params": trainable,
        "estimate_trainable_params": est.trainable_params,
        "steps": args.steps,
        "tokens_per_s": round(args.steps * args.seq_len / seconds, 1),
        "losses": losses,
        "estimate_gib": round(est.total / GIB, 3),
        "estimate_gib_without_context": round((est.total - est.parts["CUDA context + allocator slack"]) / GIB, 3),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3) if cuda else None,
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3) if cuda else None,
    }
    model = optim = None  # free the device for the next point (step() is done with them)
    return out


def extrapolate(points: list[dict[str, Any]], key: str, layers: int = EEVE_LAYERS) -> float | None:
    """Least-squares line in the layer count through the measured points, read at `layers`."""
    xs = [p["layers"] for p in points if p.get(key) is not None]
    ys = [p[key] for p in points if p.get(key) is not None]
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return round(my + slope * (layers - mx), 3)


def sft_part(args: argparse.Namespace, width: dict[str, int]) -> dict[str, Any]:
    points = [
        sft_measure(build_model(width, n, args.work / f"base-{n}l", args.tokenizer, device=args.device), n, width, args)
        for n in args.layers
    ]
    shape48 = memory.LlamaShape(
        hidden=width["hidden"],
        intermediate=width["intermediate"],
        layers=EEVE_LAYERS,
        heads=width["heads"],
        kv_heads=width["kv_heads"],
        vocab=width["vocab"],
    )
    est48 = memory.estimate_memory(
        shape48,
        method="qlora",
        r=args.r,
        seq_len=args.seq_len,
        micro_batch=1,
        gradient_checkpointing=True,
        world_size=1,
    )
    at48 = extrapolate(points, "peak_reserved_gib")
    context = est48.parts["CUDA context + allocator slack"] / GIB
    return {
        "points": points,
        "extrapolated_48_layers": {
            "peak_reserved_gib": at48,
            "peak_allocated_gib": extrapolate(points, "peak_allocated_gib"),
            "estimate_gib": round(est48.total / GIB, 3),
            # torch's allocator never sees the CUDA context, which the estimate allows 1.5 GiB for
            "ratio_measured_to_estimate": round(at48 / (est48.total / GIB - context), 3) if at48 else None,
            "goal": "ratio within 0.9..1.1",
        },
    }


# ---------------------------------------------------------------- DPO: kofin's recipe, both backends


def dpo_job(backend: str, base: Path, sft: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """What `kofin dpo` writes for configs/dpo/eeve_unsloth.yaml (stack mode, 4-bit, bf16), this size."""
    cpu = args.device == "cpu"
    return {
        "backend": backend,
        "base_model": str(base),
        "sft_run": str(sft),
        "adapter_mode": "stack",
        "load_in_4bit": True,
        "precision": "bf16",
        "max_length": args.dpo_max_length,
        "gradient_checkpointing": True,
        "lora": {"r": args.r, "alpha": 2 * args.r, "dropout": 0.0, "target_modules": TARGETS},
        "tokenizer": str(sft),
        "pairs": str(args.pairs),
        "output_dir": str(out),
        "progress": False,
        "trainer_args": dict(
            output_dir=str(out / "trainer"),
            beta=0.1,
            loss_type="sigmoid",
            label_smoothing=0.0,
            max_length=args.dpo_max_length,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            num_train_epochs=1.0,
            max_steps=args.dpo_steps,
            learning_rate=5e-6,
            lr_scheduler_type="linear",
            warmup_steps=0.0,
            bf16=True,
            fp16=False,
            gradient_checkpointing=True,
            logging_steps=1,
            seed=42,
            save_strategy="no",
            report_to=[],
            use_cpu=cpu,
            dataloader_num_workers=0,
            disable_tqdm=True,
        ),
    }


def dpo_part(backend: str, python: str, args: argparse.Namespace, base: Path, sft: Path) -> dict[str, Any]:
    out = args.work / f"dpo-{backend}"
    out.mkdir(parents=True, exist_ok=True)
    job = out / recipe.JOB_FILE
    job.write_text(json.dumps(dpo_job(backend, base, sft, args, out), indent=1), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "UNSLOTH_DISABLE_STATISTICS": "1",
        "HF_DATASETS_CACHE": str(out / "hf_cache"),
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [python, str(ROOT / "training" / "dpo_recipe.py"), str(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    wall = round(time.perf_counter() - start, 1)
    said = [
        line[len(recipe.ERROR_PREFIX) :] for line in proc.stderr.splitlines() if line.startswith(recipe.ERROR_PREFIX)
    ]
    if proc.returncode != 0:
        return {
            "ok": False,
            "exit": proc.returncode,
            "wall_s": wall,
            "error": said[-1] if said else "\n".join(proc.stderr.strip().splitlines()[-12:]),
            "stderr_tail": proc.stderr[-3000:],
        }
    result = json.loads((out / recipe.LOG_FILE).read_text(encoding="utf-8"))
    history = result["log_history"]
    final = next((h for h in reversed(history) if "train_runtime" in h), {})
    steps = [h for h in history if "rewards/margins" in h]
    tokens = steps[-1].get("num_tokens") if steps else None
    return {
        "ok": True,
        "wall_s": wall,
        "steps": len(steps),
        "train_runtime_s": final.get("train_runtime"),
        "tokens_per_s": round(tokens / final["train_runtime"], 1) if tokens and final.get("train_runtime") else None,
        "adapter_elements_changed": round(result["adapter_elements_changed"], 6),
        "peak_gpu_memory_gib_training": result.get("peak_gpu_memory_gib_training"),
        # what unsloth said of itself (its banner, the patches it applied): proof it ran, not TRL alone
        "unsloth_lines": [ln for ln in (proc.stdout + proc.stderr).splitlines() if "unsloth" in ln.lower()][:12],
    }


def compare_dpo(parts: dict[str, Any]) -> dict[str, Any] | None:
    u, t = parts.get("dpo_unsloth") or {}, parts.get("dpo_trl") or {}
    if not (u.get("ok") and t.get("ok")):
        return None
    speed = round(u["tokens_per_s"] / t["tokens_per_s"], 3) if u.get("tokens_per_s") and t.get("tokens_per_s") else None
    mu, mt = u.get("peak_gpu_memory_gib_training"), t.get("peak_gpu_memory_gib_training")
    return {
        "unsloth_speedup": speed,
        "unsloth_memory_change": round(mu / mt - 1, 3) if mu and mt else None,
        "anchor": "unsloth reports 1.9x and -19% memory for DPO",
    }


# ---------------------------------------------------------------- record


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from importlib import metadata

    import torch

    versions = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "bitsandbytes",
        "trl",
        "unsloth",
        "unsloth_zoo",
        "datasets",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else None
    return {"python": platform.python_version(), "platform": platform.platform(), "gpu": gpu, "versions": versions}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    width = dict(TOY_WIDTH if args.toy else EEVE_WIDTH)
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    record: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "width": width,
        "toy": args.toy,
        "device": args.device,
        "seq_len": args.seq_len,
        "r": args.r,
        "environment": environment(args),
        "parts": {},
        "axolotl": "not run: axolotl 0.19 and its pins do not fit the 64 MiB of wheels carried to the device; "
        "the SFT part measures the same QLoRA recipe (PEFT + bitsandbytes, sdpa, checkpointing) directly",
    }
    parts = record["parts"]

    def run(name: str, measure) -> None:
        """One part; its failure is recorded and the other parts still run (a device lease is short)."""
        say(f"{name}: started at {time.perf_counter() - began:.0f} s")
        try:
            parts[name] = measure()
        except Exception as error:  # noqa: BLE001 - the record names it; the next part still runs
            parts[name] = {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-4000:],
            }
        say(f"{name}: {'failed' if parts[name].get('ok') is False else 'done'} at {time.perf_counter() - began:.0f} s")
        record["wall_s"] = round(time.perf_counter() - began, 1)
        write_record(args.out, record)

    if "sft" not in args.skip:
        run("sft", lambda: sft_part(args, width))
    if {"dpo_unsloth", "dpo_trl"} - args.skip:
        layers = min(args.layers)

        def dpo_inputs() -> dict[str, Any]:
            """The 2-layer base and its stacked adapter both DPO parts train on (built once)."""
            base = build_model(width, layers, args.work / f"base-{layers}l", args.tokenizer, device=args.device)
            sft = stacked_adapter(base, args.r, args.work / f"sft-{layers}l-r{args.r}")
            return {"ok": True, "base": str(base), "sft": str(sft)}

        run("dpo_inputs", dpo_inputs)
        inputs = parts["dpo_inputs"]
        base, sft = (Path(inputs["base"]), Path(inputs["sft"])) if inputs.get("ok") else (None, None)
        for backend, python in (("unsloth", args.unsloth_python), ("trl", sys.executable)):
            if f"dpo_{backend}" in args.skip:
                continue
            if base is None or sft is None:  # the inputs failed (recorded above): so does this part
                parts[f"dpo_{backend}"] = {"ok": False, "error": "not run: dpo_inputs failed"}
                continue
            run(
                f"dpo_{backend}",
                lambda backend=backend, python=python, base=base, sft=sft: dpo_part(backend, python, args, base, sft),
            )
        record["dpo_comparison"] = compare_dpo(parts)
    record["wall_s"] = round(time.perf_counter() - began, 1)
    write_record(args.out, record)
    print(json.dumps(record, indent=2, ensure_ascii=False))
    return 1 if any(p.get("ok") is False for p in parts.values()) else 0


def say(line: str) -> None:
    print(f"gpu check: {line}", file=sys.stderr, flush=True)


def write_record(out: Path, record: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
