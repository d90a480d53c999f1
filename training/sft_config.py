"""Config of the SFT stage, in kofin's terms; `training/axolotl_yaml.py` turns it into axolotl's.

Run as:
    kofin sft --config configs/sft/tiny.yaml [key.path=value ...] [--dry-run]

`kofin sft --help` lists every key below with its default and description.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from kofin.config import KofinModel, ResolvedPath, StageConfig
from kofin.training.memory import ALL_LINEAR

METHOD_PARTS = ("lora", "qlora", "dora", "rslora")


class Method(KofinModel):
    """What a method string such as 'qlora+rslora' asks for."""

    quantize_4bit: bool
    dora: bool
    rslora: bool

    @classmethod
    def parse(cls, text: str) -> Method:
        parts = [p.strip() for p in text.lower().split("+") if p.strip()]
        unknown = [p for p in parts if p not in METHOD_PARTS]
        if not parts or unknown:
            bad = f"unknown part {unknown[0]!r}" if unknown else "empty"
            raise ValueError(
                f"method {text!r}: {bad}; use one of {', '.join(METHOD_PARTS)} or a combination "
                "joined by '+', e.g. qlora+rslora"
            )
        if "lora" in parts and "qlora" in parts:
            raise ValueError("method: choose 'lora' (16-bit base) or 'qlora' (4-bit NF4 base), not both")
        return cls(quantize_4bit="qlora" in parts, dora="dora" in parts, rslora="rslora" in parts)


def _known_method(method: str) -> str:
    Method.parse(method)  # raises with the parts to choose from
    return method.lower().replace(" ", "")


# A method string, checked and normalised ("QLoRA + rsLoRA" -> "qlora+rslora"): the `method` key of
# `kofin sft` and of `kofin fedlora`, which train the same adapters.
MethodName = Annotated[str, AfterValidator(_known_method)]


class SftDataset(KofinModel):
    """One training dataset: a `kofin data` run directory or a JSONL file."""

    path: ResolvedPath = Field(
        description="A `kofin data` run directory (its sft/train.jsonl, or sft/raw_text.jsonl for "
        "type completion) or a JSONL file: chat rows {messages:[{role,content}]} or text rows {text}."
    )
    type: Literal["chat", "completion"] = Field(
        default="chat",
        description="chat: supervised chats, loss on assistant turns only; completion: raw text, loss "
        "on every token (domain-adaptive continued pretraining).",
    )


class LoraSettings(KofinModel):
    r: int = Field(default=8, description="LoRA rank; the reference recipe uses 256.")
    alpha: int = Field(default=16, gt=0, description="LoRA alpha; scale is alpha/r (alpha/sqrt(r) with rslora).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    targets: Literal["all-linear"] | list[str] = Field(
        default="all-linear",
        description=f"'all-linear' or a list of module names from {', '.join(ALL_LINEAR)}.",
    )

    @field_validator("r")
    @classmethod
    def _positive_rank(cls, r: int) -> int:
        if r < 1:
            raise ValueError(
                f"rank {r} trains nothing; use a rank >= 1, e.g. 8 for a tiny run or 256 for the reference recipe"
            )
        return r

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets):
        if isinstance(targets, list):
            unknown = [t for t in targets if t not in ALL_LINEAR]
            if unknown or not targets:
                raise ValueError(
                    f"unknown target module(s) {unknown or '[]'}; choose from {list(ALL_LINEAR)} or 'all-linear'"
                )
        return targets

    @property
    def target_modules(self) -> tuple[str, ...]:
        return ALL_LINEAR if self.targets == "all-linear" else tuple(self.targets)


class Schedule(KofinModel):
    """Optimisation settings every training stage shares (SFT and DPO)."""

    gradient_accumulation_steps: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    num_epochs: float = Field(default=1.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps; null = num_epochs."
    )
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    precision: Literal["bf16", "fp16", "fp32"] = Field(default="fp32", description="Compute dtype; bf16 on H100/H200.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward to save memory.")
    logging_steps: int = Field(default=1, ge=1, description="Log loss (and rewards) every N steps.")
    seed: int = Field(default=0, description="Seed for data order and LoRA init.")


class Training(Schedule):
    sequence_len: int = Field(default=512, ge=16, description="Tokens per sample (packed sample with sample_packing).")
    sample_packing: bool = Field(
        default=False, description="Pack several samples into one sequence (needs flash attention on GPU)."
    )
    micro_batch_size: int = Field(default=2, ge=1, description="Samples per GPU per forward pass.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    optimizer: str = Field(
        default="adamw_torch",
        description="axolotl/transformers optimizer name, e.g. adamw_torch, adamw_bnb_8bit, paged_adamw_8bit.",
    )
    neftune_noise_alpha: float | None = Field(
        default=None, gt=0, description="NEFTune embedding noise; off by default (it hurt citation formatting)."
    )
    flash_attention: bool = Field(
        default=False,
        description="Opt-in FlashAttention-2 (GPU only; the pinned axolotl env lacks it: install with "
        "`.venv-axolotl/bin/pip install flash-attn --no-build-isolation` on the GPU host). Off = PyTorch SDPA, "
        "which axolotl 0.19 packs with varlen attention or a block-diagonal mask.",
    )
    save_steps: int = Field(
        default=50, ge=1, description="Checkpoint every N steps; a killed run resumes from the last one."
    )
    dora_magnitude_lr: float | None = Field(
        default=None,
        gt=0,
        description="DoRA only: a learning rate of its own for the magnitude vectors (FinLoRA's suggested fix for "
        "DoRA's instability); null = learning_rate for every adapter tensor. Passed to axolotl as an lr_groups "
        "entry over the lora_magnitude_vector parameters.",
    )
    too_long: Literal["error", "drop", "truncate"] = Field(
        default="error",
        description="Chat rows longer than sequence_len: 'error' stops before launch and names them; "
        "'drop' / 'truncate' let axolotl do that. (Raw text is always split into sequence_len chunks.)",
    )


class Launch(KofinModel):
    launcher: Literal["accelerate", "torchrun", "python"] = Field(
        default="accelerate", description="How `axolotl train` starts its processes; python = one process, no launcher."
    )
    gpus_per_node: int = Field(
        default=1,
        ge=1,
        description="Processes (GPUs) per node: accelerate --num_processes / torchrun --nproc_per_node.",
    )
    nodes: int = Field(default=1, ge=1, description="Number of nodes; > 1 needs rdzv_endpoint.")
    node_rank: int = Field(
        default=0, ge=0, description="This node's rank (torchrun --node_rank / accelerate --machine_rank)."
    )
    rdzv_endpoint: str | None = Field(
        default=None, description="host:port of the rendezvous (rank-0 node) for multi-node runs."
    )
    rdzv_id: str = Field(default="kofin-sft", description="Rendezvous id shared by every node of one job.")
    distributed: Literal["ddp", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3", "fsdp"] = Field(
        default="ddp", description="Data parallelism: plain DDP, DeepSpeed ZeRO stage 1/2/3, or FSDP (full shard)."
    )
    axolotl_env: ResolvedPath | None = Field(
        default=None,
        description="Virtual env holding axolotl; null = $KOFIN_AXOLOTL_ENV or .venv-axolotl in the kofin checkout.",
    )
    container: list[str] | None = Field(
        default=None,
        description="Run inside a container instead of the env: the command prefix, e.g. [docker, run, --rm, "
        "--gpus, all, -v, /data:/data, axolotlai/axolotl:0.19.0]; paths must be the same inside.",
    )
    gpu_hour_price: float = Field(
        default=0.0, ge=0.0, description="Price of one GPU-hour for the manifest's cost estimate (0 = not priced)."
    )
    currency: str = Field(default="USD", description="Currency of gpu_hour_price.")

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @model_validator(mode="after")
    def _multinode_needs_rendezvous(self) -> Launch:
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise ValueError(
                "nodes > 1 needs rdzv_endpoint (host:port of the rank-0 node), e.g. rdzv_endpoint=10.0.0.1:29500"
            )
        if self.rdzv_endpoint and not re.fullmatch(r".+:\d+", self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint {self.rdzv_endpoint!r} must be host:port, e.g. 10.0.0.1:29500")
        if self.launcher == "python" and self.world_size > 1:
            raise ValueError("launcher 'python' starts one process; use torchrun or accelerate for gpus_per_node > 1")
        if self.node_rank >= self.nodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nodes ({self.nodes})")
        return self


class ModelShape(KofinModel):
    """A Llama shape, for dry runs on machines that do not hold the base model."""

    hidden: int = Field(gt=0, description="hidden_size")
    intermediate: int = Field(gt=0, description="intermediate_size")
    layers: int = Field(gt=0, description="num_hidden_layers")
    heads: int = Field(gt=0, description="num_attention_heads")
    kv_heads: int = Field(gt=0, description="num_key_value_heads")
    vocab: int = Field(gt=0, description="vocab_size")


class SftConfig(StageConfig):
    base_model: ResolvedPath | None = Field(
        default=None, description="Local Hugging Face model folder; null = kofin's embedded tiny EEVE-shaped model."
    )
    base_model_shape: ModelShape | None = Field(
        default=None,
        description="Shape used by --dry-run when base_model/config.json is not on this machine "
        "(the config.json wins when present).",
    )
    datasets: list[SftDataset] = Field(min_length=1, description="Training data, from `kofin data` or JSONL files.")
    method: MethodName = Field(
        default="lora",
        description="lora, qlora (4-bit NF4 base, double quant), dora, rslora, or a combination such as qlora+rslora.",
    )
    chat_template: Literal["eeve", "jinja", "tokenizer_default"] = Field(
        default="eeve",
        description="Chat template axolotl trains with and saves into the run's tokenizer (DPO, merge and the chat "
        "then use the same one): eeve = EEVE's 'Human:/Assistant:' template written out in the YAML (a base "
        "checkpoint's tokenizer often has none); jinja = chat_template_jinja; tokenizer_default = the base "
        "tokenizer's own (an error if it has none).",
    )
    chat_template_jinja: str | None = Field(default=None, description="The Jinja template for chat_template: jinja.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Adapter settings.")
    training: Training = Field(default_factory=Training, description="Optimisation settings.")
    launch: Launch = Field(default_factory=Launch, description="Processes, nodes, env and cost.")
    keep_checkpoints: bool = Field(
        default=False,
        description="Keep checkpoint-N folders (optimizer states) in the finished run; they exist for resume.",
    )

    @model_validator(mode="after")
    def _template_text_only_for_jinja(self) -> SftConfig:
        if self.chat_template == "jinja" and not (self.chat_template_jinja or "").strip():
            raise ValueError(
                "chat_template: jinja needs chat_template_jinja (the template text); or use chat_template: eeve"
            )
        if self.chat_template != "jinja" and self.chat_template_jinja is not None:
            raise ValueError(
                f"chat_template_jinja is unused with chat_template: {self.chat_template}; set chat_template: jinja "
                "or remove chat_template_jinja"
            )
        return self

    @model_validator(mode="after")
    def _magnitude_lr_needs_dora(self) -> SftConfig:
        if self.training.dora_magnitude_lr is not None and not self.parsed_method.dora:
            raise ValueError(
                f"training.dora_magnitude_lr is DoRA's magnitude-vector learning rate; method {self.method!r} has "
                "no magnitude vectors: use method dora (or e.g. qlora+dora), or remove training.dora_magnitude_lr"
            )
        return self

    @property
    def parsed_method(self) -> Method:
        return Method.parse(self.method)
