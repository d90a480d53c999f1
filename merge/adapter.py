"""Step 1 of the merge stage: a tuned run's LoRA/QLoRA adapters folded into full 16-bit weights.

Run as part of:
    kofin merge --config configs/merge/tiny.yaml

A `kofin sft` run holds one adapter on its base model. A `kofin dpo` run records in its manifest
what its adapter applies to (`metrics.adapter_base`): with `adapter_mode: stack` DPO kept training
the SFT adapter, so the DPO adapter alone applies to the base; with `adapter_mode: merge` the SFT
adapter was merged into the base first, so it is merged first here too. QLoRA trained against
4-bit weights, but its adapter is merged into the bf16 base: merging into 4-bit weights would
round the update away and leave a model that cannot be merged further.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.rundir import adapter_lineage, require_complete
from kofin.stages import ADAPTER_STAGES

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class MergeInputError(KofinError):
    """A run, model or adapter the merge stage cannot use, found before any tensor is read."""


@dataclass
class TunedSource:
    """What the tuned model is made of: the base folder and the adapters to merge, in order."""

    run: Path
    stage: str
    base_model: Path
    adapters: list[Path] = field(default_factory=list)
    tokenizer_dir: Path | None = None  # the run's own tokenizer (chat template included)


def resolve_tuned(tuned_run: Path, base_override: Path | None) -> TunedSource:
    manifest = require_complete(tuned_run, what="tuned_run")
    stage = manifest.get("stage")
    if stage not in (*ADAPTER_STAGES, "dpo"):
        raise MergeInputError(
            f"tuned_run: {tuned_run} was written by stage '{stage}'; point it at a `kofin dpo`, `kofin sft` or "
            "`kofin fedlora` run"
        )
    for name in ADAPTER_FILES:
        if not (tuned_run / name).is_file():
            raise MergeInputError(f"tuned_run: {tuned_run} holds no {name}; re-run `kofin {stage}`")
    lineage = adapter_lineage(tuned_run, manifest)
    adapters = [*lineage.merged_first, tuned_run]
    for earlier in adapters[:-1]:
        require_complete(earlier, ADAPTER_STAGES, what=f"the SFT run {tuned_run.name} was trained on top of")
    base = base_override or lineage.base_model
    if base is None or not (base / "config.json").is_file():
        raise MergeInputError(
            f"base_model: {base} has no config.json (the base {tuned_run.name}'s adapter was trained on); "
            "set base_model to the local folder of that model"
        )
    refuse_quantized(base, "base_model")
    tokenizer_dir = tuned_run if (tuned_run / "tokenizer_config.json").is_file() else None
    return TunedSource(tuned_run, stage, base, adapters, tokenizer_dir)


def refuse_quantized(model: Path, key: str) -> None:
    quant = read_model_config(model, key).get("quantization_config")
    if quant:
        kind = quant.get("quant_method") or ("4-bit" if quant.get("load_in_4bit") else "quantized")
        raise MergeInputError(
            f"{key}: {model} holds {kind} weights (config.json quantization_config); merging needs the 16-bit "
            "checkpoint of the same model. Point it at the unquantized local folder."
        )


def read_model_config(model: Path, key: str = "model") -> dict[str, Any]:
    path = Path(model) / "config.json"
    if not path.is_file():
        raise MergeInputError(
            f"{key}: {model} has no config.json; point it at a local Hugging Face model folder (kofin never downloads)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def merge_adapters(src: TunedSource, out: Path, *, dtype: str, max_shard_size: int) -> dict[str, Any]:
    """Base in `dtype` on CPU + each adapter merge_and_unload()ed, saved as safetensors shards."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src.base_model), dtype=getattr(torch, dtype), device_map="cpu")
    for adapter in src.adapters:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size=max_shard_size)
    params = sum(p.numel() for p in model.parameters())
    del model
    tokenizer = AutoTokenizer.from_pretrained(str(src.tokenizer_dir or src.base_model))
    tokenizer.save_pretrained(str(out))
    return {
        "parameters": params,
        "adapters": [str(a) for a in src.adapters],
        "tokenizer_from": str(src.tokenizer_dir or src.base_model),
        "chat_template": bool(tokenizer.chat_template),
    }
