"""Builders for the merge tests: adapter runs shaped like `kofin sft` / `kofin dpo` output, weights I/O."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from kofin.config import load_config
from kofin.merge.config import MergeConfig
from kofin.rundir import open_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "merge" / "tiny.yaml"


def adapter_run(
    out: Path, base: Path, *, stage: str = "sft", seed: int = 0, r: int = 4, metrics: dict[str, Any] | None = None
) -> Path:
    """A complete run directory holding a LoRA adapter on `base` with non-zero B (as after training)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero; training moves it
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    with open_run(stage, {"output_dir": str(out)}, inputs={"base_model": base}) as run:
        peft_model.save_pretrained(str(run.path))
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run.path))
        run.metrics.update(metrics or {})
    return out


def lora_deltas(run: Path) -> dict[str, torch.Tensor]:
    """Module weight name -> scale * B @ A, computed from the adapter file alone."""
    cfg = json.loads((run / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    tensors = weights(run)
    out = {}
    for name, a in tensors.items():
        if ".lora_A." in name:
            b = tensors[name.replace(".lora_A.", ".lora_B.")]
            module = name.removeprefix("base_model.model.").split(".lora_A.")[0]
            out[module + ".weight"] = scale * (b.float() @ a.float())
    return out


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def merge_config(out: Path, tuned_run: Path, *overrides: str) -> MergeConfig:
    return load_config(
        MergeConfig, TINY, [f"output_dir={out}", f"tuned_run={tuned_run}", "checks.generate_tokens=4", *overrides]
    )


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16)


def wide_model(out: Path, tokenizer_from: Path, seed: int, hidden: int = 512, layers: int = 12) -> Path:
    """An EEVE-shaped model large enough (~49M parameters, ~98 MB in bf16) for memory to be measurable,
    in many layers, so that its size is many times its largest tensor (what a streaming merge holds)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tiny = json.loads((tokenizer_from / "config.json").read_text())
    config = LlamaConfig(
        **{
            **{
                k: tiny[k]
                for k in (
                    "vocab_size",
                    "bos_token_id",
                    "eos_token_id",
                    "pad_token_id",
                    "tie_word_embeddings",
                    "rms_norm_eps",
                )
            },
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "intermediate_size": hidden * 7 // 2,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "dtype": "bfloat16",
        }
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(str(out))
    return out
