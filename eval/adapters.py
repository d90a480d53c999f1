"""Scoring a `kofin sft` / `kofin dpo` run directly: its base model with the run's LoRA adapters applied.

Run as: a library; `kofin eval` loads a model given as an SFT or DPO run directory this way, so
each training stage is scored before (and without) `kofin merge`.

What an adapter applies to is read as the merge stage reads it (eval does not import it: stages
meet only through run directories): the base named by the run's manifest (`metrics.adapter_base`)
or by its adapter_config.json, with the SFT runs a DPO run trained on top of
(`adapter_mode: merge`, `merged_first`) merged in first. Each adapter is merged into the weights
(merge_and_unload) after loading in the eval dtype, so scoring runs at full-model speed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.rundir import adapter_lineage, require_complete
from kofin.stages import ADAPTER_STAGES


class AdapterRunError(KofinError):
    """An adapter run directory whose base model or earlier adapters cannot be found."""


@dataclass
class AdapterStack:
    base: Path  # full model folder the first adapter was trained on
    adapters: list[Path]  # merged in this order; the evaluated run last
    tokenizer_dir: Path  # the run's own tokenizer (chat template included), else the base's


MODEL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def is_adapter_run(path: Path) -> bool:
    """A LoRA adapter without full model weights. axolotl also saves the base model's config.json beside the
    adapter, so config.json alone does not make a folder a full model: its weights do."""
    path = Path(path)
    return (path / "adapter_config.json").is_file() and not any((path / w).is_file() for w in MODEL_WEIGHTS)


def adapter_stack(run: Path, where: str = "model") -> AdapterStack:
    run = Path(run)
    if not any((run / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterRunError(
            f"{where}: {run} has adapter_config.json but no adapter weights (adapter_model.safetensors); "
            "re-run the stage that wrote it"
        )
    lineage = adapter_lineage(run)
    earlier = list(lineage.merged_first)
    for sft in earlier:
        require_complete(sft, ADAPTER_STAGES, what=f"{where}: the SFT run {run.name} was trained on top of")
    base = lineage.base_model or Path("")
    if lineage.base_model is None or not (base / "config.json").is_file():
        raise AdapterRunError(
            f"{where}: {run} holds a LoRA adapter trained on {lineage.base_model or '(no base recorded)'}, "
            "which is not a local model folder here. "
            "Put the base model back at that path, or evaluate the merged model (kofin merge)."
        )
    tokenizer_dir = run if (run / "tokenizer_config.json").is_file() else base
    return AdapterStack(base, [*earlier, run], tokenizer_dir)


def load_with_adapters(stack: AdapterStack, torch_dtype: Any) -> Any:
    """The base in `torch_dtype` with every adapter of the stack merged in, in order."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stack.base, dtype=torch_dtype)
    for adapter in stack.adapters:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model
