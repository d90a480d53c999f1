"""kofin's SFT config -> the axolotl YAML that `axolotl train` runs.

Everything axolotl does (tokenising with the chat template, masking, packing, PEFT wrapping,
4-bit loading, DDP/DeepSpeed/FSDP, checkpoints) stays axolotl's; this module only names the
keys. The written YAML is self-contained: `axolotl train axolotl.yaml` reproduces the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kofin.training.sft_config import SftConfig

AXOLOTL_YAML = "axolotl.yaml"


# DeepSpeed JSONs with "auto" everywhere the HF Trainer fills in from the axolotl config.
def deepspeed_config(stage: int) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }


# DoRA's magnitude vectors as PEFT names them, and the axolotl lr_groups entry that trains them apart.
DORA_MAGNITUDE_PARAM = "lora_magnitude_vector"
DORA_MAGNITUDE_GROUP = "dora_magnitude"


def chat_template_text(cfg: SftConfig) -> str | None:
    """The Jinja text the run trains with; None = the base tokenizer's own (tokenizer_default)."""
    if cfg.chat_template == "eeve":
        from kofin.tiny import EEVE_CHAT_TEMPLATE

        return EEVE_CHAT_TEMPLATE
    return cfg.chat_template_jinja if cfg.chat_template == "jinja" else None


def dataset_entry(path: Path, kind: str) -> dict[str, Any]:
    if kind == "completion":
        # Continued pretraining: every token is trained, BOS prepended by axolotl.
        return {"path": str(path), "ds_type": "json", "type": "completion", "field": "text"}
    return {
        "path": str(path),
        "ds_type": "json",
        "type": "chat_template",  # the template is the config's top-level one (chat_template / _jinja)
        "field_messages": "messages",
        "roles_to_train": ["assistant"],
        "train_on_eos": "turn",
    }


def build_axolotl_config(
    cfg: SftConfig,
    *,
    base_model: Path,
    datasets: list[tuple[Path, str]],
    output_dir: Path,
    deepspeed_json: Path | None = None,
    architecture: str = "LlamaForCausalLM",
) -> dict[str, Any]:
    method, lora, train, launch = cfg.parsed_method, cfg.lora, cfg.training, cfg.launch
    y: dict[str, Any] = {
        "base_model": str(base_model),
        "model_type": "AutoModelForCausalLM",
        "tokenizer_type": "AutoTokenizer",
        "trust_remote_code": False,
        "datasets": [dataset_entry(p, kind) for p, kind in datasets],
        # Written out, not left to the tokenizer: a base checkpoint's often has none (axolotl then
        # raises), and axolotl saves this one into the run's tokenizer for DPO, merge and serving.
        **(
            {"chat_template": "jinja", "chat_template_jinja": template}
            if (template := chat_template_text(cfg))
            else {"chat_template": "tokenizer_default"}
        ),
        "dataset_prepared_path": str(output_dir / "prepared"),
        "val_set_size": 0,
        "output_dir": str(output_dir),
        "sequence_len": train.sequence_len,
        "sample_packing": train.sample_packing,
        "pad_to_sequence_len": train.sample_packing,
        # kofin names too-long rows before launch; "raise" keeps axolotl from silently dropping a
        # row its own tokenizer version counts a few tokens longer.
        "excess_length_strategy": "raise" if train.too_long == "error" else train.too_long,
        "adapter": "qlora" if method.quantize_4bit else "lora",
    }
    if method.quantize_4bit:
        y["load_in_4bit"] = True  # axolotl's qlora: NF4, double quant, bf16 quant storage
    y.update(
        lora_r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
    )
    if lora.targets == "all-linear":
        y["lora_target_linear"] = True
    else:
        y["lora_target_modules"] = list(lora.targets)
    if method.dora:
        y["peft_use_dora"] = True
    if method.rslora:
        y["peft_use_rslora"] = True
    # axolotl's fused LoRA kernels are CUDA-only and do not cover dropout or DoRA; kofin keeps the
    # plain PEFT path so one recipe runs on a laptop CPU and on the cluster alike.
    y.update(lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False)

    y.update(
        micro_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_epochs=train.num_epochs,
        optimizer=train.optimizer,
        lr_scheduler=train.lr_scheduler,
        learning_rate=train.learning_rate,
        warmup_ratio=train.warmup_ratio,
        weight_decay=train.weight_decay,
    )
    if train.max_steps is not None:
        y["max_steps"] = train.max_steps
    if train.dora_magnitude_lr is not None:
        # axolotl's optimizer grouping puts every trainable parameter whose name contains a group's module
        # string into that group: PEFT names DoRA's magnitudes ...lora_magnitude_vector.default.weight.
        y["lr_groups"] = [
            {"name": DORA_MAGNITUDE_GROUP, "modules": [DORA_MAGNITUDE_PARAM], "lr": train.dora_magnitude_lr}
        ]
    if train.neftune_noise_alpha is not None:
        y["neftune_noise_alpha"] = train.neftune_noise_alpha
    # SDPA is what the pinned env runs everywhere (axolotl 0.19 packs with it through varlen
    # attention or a block-diagonal mask); FlashAttention-2 is an opt-in needing flash-attn.
    y["attn_implementation"] = "flash_attention_2" if train.flash_attention else "sdpa"
    y.update(
        bf16=train.precision == "bf16",
        fp16=train.precision == "fp16",
        tf32=train.precision == "bf16",
        gradient_checkpointing=train.gradient_checkpointing,
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        # Two, not one: a kill during a save can leave the newest checkpoint incomplete, and
        # resume then falls back to the one before it.
        save_total_limit=2,
        auto_resume_from_checkpoints=True,
        seed=train.seed,
        strict=False,
    )
    if launch.distributed.startswith("deepspeed"):
        y["deepspeed"] = str(deepspeed_json)
        if launch.distributed == "deepspeed_zero3" and train.gradient_checkpointing:
            # ZeRO-3 + (Q)LoRA with non-reentrant checkpointing can raise CheckpointError on recompute;
            # axolotl only warns when the DeepSpeed file's name holds "zero3", which kofin's does not.
            y["gradient_checkpointing_kwargs"] = {"use_reentrant": True}
    elif launch.distributed == "fsdp":
        y["fsdp_version"] = 2
        y["fsdp_config"] = {
            "offload_params": False,
            "state_dict_type": "FULL_STATE_DICT",
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            # Llama -> LlamaDecoderLayer, Mistral -> MistralDecoderLayer, Qwen2 -> Qwen2DecoderLayer.
            "transformer_layer_cls_to_wrap": architecture.replace("ForCausalLM", "DecoderLayer"),
            "reshard_after_forward": True,
            "activation_checkpointing": train.gradient_checkpointing,
        }
        if train.gradient_checkpointing:
            y["gradient_checkpointing"] = False  # FSDP2 does it through activation_checkpointing
    return y
