"""The LoRA adapter both sides of the federation build: the same PEFT model from the same config.

Run as: a library (the server builds it to seed round 1 and to write the final adapter; every bank
builds it to train the round's global adapter on its own rows).

Only adapter tensors travel. Their names are PEFT's saved names (`get_peft_model_state_dict`), so
the arrays a bank returns, the arrays the server aggregates and the `adapter_model.safetensors`
the run directory holds are keyed alike, and `kofin dpo` / `kofin merge` / `kofin eval` load the
result with PEFT like an SFT adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kofin.training.fedlora.config import FedLoraConfig

AdapterArrays = dict[str, np.ndarray]


def resolve_base_model(cfg: FedLoraConfig) -> Path:
    if cfg.base_model is None:
        from kofin.tiny import default_tiny_model

        return default_tiny_model()
    if not (cfg.base_model / "config.json").is_file():
        from kofin.errors import KofinError

        raise KofinError(
            f"base_model: {cfg.base_model} has no config.json; point it at a local Hugging Face model folder"
        )
    return cfg.base_model


def lora_config(cfg: FedLoraConfig) -> Any:
    from peft import LoraConfig

    method = cfg.parsed_method
    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        use_dora=method.dora,
        use_rslora=method.rslora,
        task_type="CAUSAL_LM",
    )


def load_tokenizer(base_model: Path) -> Any:
    from transformers import AutoTokenizer

    from kofin.tiny import EEVE_CHAT_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    if not tokenizer.chat_template:
        # As `kofin sft`'s default (chat_template: eeve): a base checkpoint's tokenizer often has none.
        tokenizer.chat_template = EEVE_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_peft_model(cfg: FedLoraConfig, base_model: Path, *, for_training: bool) -> Any:
    """The base model with a fresh adapter whose initial values depend only on `training.seed`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if for_training and cfg.parsed_method.quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        )
    model = AutoModelForCausalLM.from_pretrained(str(base_model), **kwargs)
    if "quantization_config" in kwargs:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    torch.manual_seed(cfg.training.seed)
    return get_peft_model(model, lora_config(cfg))


def adapter_arrays(model: Any) -> AdapterArrays:
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu").float().numpy().copy() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_arrays(model: Any, arrays: AdapterArrays) -> None:
    """Put `arrays` into the model's adapter; a missing or unexpected name is an error, never skipped."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    own = get_peft_model_state_dict(model)
    if set(own) != set(arrays):
        missing, extra = sorted(set(own) - set(arrays)), sorted(set(arrays) - set(own))
        raise ValueError(
            f"adapter arrays do not match this model's adapter (missing {missing[:3]}, unexpected {extra[:3]}); "
            "server and banks must run the same method, lora.r and lora.targets"
        )
    state = {k: torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype) for k, v in arrays.items()}
    set_peft_model_state_dict(model, state)


def save_adapter(model: Any, arrays: AdapterArrays, out: Path) -> None:
    """adapter_model.safetensors + adapter_config.json, as PEFT (and `kofin sft` through axolotl) writes them."""
    load_adapter_arrays(model, arrays)
    model.save_pretrained(str(out), safe_serialization=True)


def bytes_of(arrays: AdapterArrays) -> int:
    return int(sum(a.nbytes for a in arrays.values()))
