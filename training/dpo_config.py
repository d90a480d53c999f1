"""Config of the DPO stage.

Run as:
    kofin dpo --config configs/dpo/tiny.yaml [key.path=value ...]

`kofin dpo --help` lists every key below with its default and description.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kofin.config import ResolvedPath, StageConfig
from kofin.training.sft_config import LoraSettings, Schedule

LossType = Literal[
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
]


class DpoTraining(Schedule):
    beta: float = Field(default=0.1, gt=0, description="KL strength: how far the policy may move from the reference.")
    loss_type: LossType = Field(default="sigmoid", description="TRL DPO loss: sigmoid (DPO), ipo, hinge, robust, ...")
    label_smoothing: float = Field(
        default=0.0, ge=0.0, lt=0.5, description="Assumed label noise (robust / conservative DPO)."
    )
    max_length: int = Field(
        default=1024, ge=16, description="Tokens of prompt + response; longer pairs are truncated from the end."
    )
    per_device_batch_size: int = Field(default=2, ge=1, description="Preference pairs per device per step.")
    # DPO moves a tuned policy a little: a small peak rate and a plain linear decay.
    learning_rate: float = Field(
        default=5e-6, gt=0, description="Peak learning rate (DPO wants it small on real models)."
    )
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="linear", description="Learning-rate schedule."
    )


class DpoConfig(StageConfig):
    sft_run: ResolvedPath | None = Field(
        default=None,
        description="`kofin sft` or `kofin fedlora` run directory whose adapter DPO starts from; "
        "null = train a fresh adapter on base_model.",
    )
    adapter_mode: Literal["stack", "merge"] = Field(
        default="stack",
        description="stack: keep training the SFT adapter (output is one adapter on the base model); merge: fold the "
        "SFT adapter into 16-bit base weights and train a new adapter on top (output applies to base+SFT).",
    )
    base_model: ResolvedPath | None = Field(
        default=None,
        description="Local model folder; null = the SFT run's base model, "
        "or kofin's embedded tiny model without sft_run.",
    )
    preferences: list[ResolvedPath] = Field(
        min_length=1,
        description="Preference pairs: `kofin data` run directories (their dpo/train.jsonl) or JSONL files of "
        "{prompt:[messages], chosen:[assistant], rejected:[assistant]}.",
    )
    backend: Literal["auto", "unsloth", "trl"] = Field(
        default="auto",
        description="unsloth (FastLanguageModel + TRL DPOTrainer, in the pinned unsloth env as a subprocess; needs "
        "CUDA), trl (TRL + PEFT in kofin's env, any device), auto = unsloth where CUDA and the unsloth env are "
        "present, else trl. Both keep the adapter in fp32.",
    )
    unsloth_env: ResolvedPath | None = Field(
        default=None,
        description="Virtual env holding unsloth (backend unsloth runs there as a subprocess); null = "
        "$KOFIN_UNSLOTH_ENV or .venv-unsloth in the kofin checkout (`make unsloth-env`).",
    )
    load_in_4bit: bool = Field(
        default=False, description="Load the base in 4-bit NF4 (QLoRA-style DPO; unsloth or bitsandbytes)."
    )
    lora: LoraSettings = Field(
        default_factory=LoraSettings,
        description="Settings of the new adapter (without sft_run, or adapter_mode merge).",
    )
    training: DpoTraining = Field(default_factory=DpoTraining, description="Optimisation settings.")

    @model_validator(mode="after")
    def _lora_only_for_a_new_adapter(self) -> DpoConfig:
        if self.sft_run is not None and self.adapter_mode == "stack" and "lora" in self.model_fields_set:
            raise ValueError(
                "lora settings are unused with adapter_mode: stack (the SFT adapter keeps its own rank and "
                "targets); remove the lora section, or use adapter_mode: merge to train a new adapter"
            )
        if "exo_pair" == self.training.loss_type and self.training.label_smoothing == 0:
            raise ValueError("loss_type exo_pair needs training.label_smoothing > 0, e.g. 0.001 (TRL divides by it)")
        return self

    @model_validator(mode="after")
    def _merge_needs_16bit(self) -> DpoConfig:
        if self.adapter_mode == "merge" and self.load_in_4bit and self.sft_run is not None:
            raise ValueError(
                "adapter_mode 'merge' folds the SFT adapter into the base weights, which must stay 16-bit; "
                "use adapter_mode: stack with load_in_4bit, or load_in_4bit: false"
            )
        return self
