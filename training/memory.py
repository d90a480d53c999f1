"""Trainable-parameter count and per-GPU memory estimate for LoRA-family fine-tuning of a Llama.

Used by `kofin sft --dry-run` to tell an engineer, before any GPU is booked, whether the recipe
fits: EEVE-10.8B with QLoRA r=256 on all linear layers trains ~1.007B parameters (9.3%) and needs
roughly 25-32 GB per GPU with gradient checkpointing. Everything here is arithmetic on the
model's config.json; no weights are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie_embeddings: bool = False

    @classmethod
    def from_config(cls, path: Path) -> LlamaShape:
        """Read a HF config.json (or the model folder holding it)."""
        path = Path(path)
        cfg = json.loads((path / "config.json" if path.is_dir() else path).read_text(encoding="utf-8"))
        return cls(
            hidden=cfg["hidden_size"],
            intermediate=cfg["intermediate_size"],
            layers=cfg["num_hidden_layers"],
            heads=cfg["num_attention_heads"],
            kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            vocab=cfg["vocab_size"],
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder block."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    def other_params(self) -> int:
        """Embeddings, LM head and norms: never quantized, kept in 16-bit."""
        embed = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        norms = self.hidden * (2 * self.layers + 1)
        return embed + norms

    def total_params(self) -> int:
        return self.linear_params() + self.other_params()


EEVE_10_8B = LlamaShape(hidden=4096, intermediate=14336, layers=48, heads=32, kv_heads=8, vocab=40960)


def lora_params(
    shape: LlamaShape, r: int, targets: tuple[str, ...] | list[str] = ALL_LINEAR, *, dora: bool = False
) -> int:
    """LoRA adds A (r x in) and B (out x r) per targeted linear; DoRA adds a magnitude per output."""
    unknown = set(targets) - set(ALL_LINEAR)
    if unknown:
        raise ValueError(f"unknown target modules {sorted(unknown)}; choose from {list(ALL_LINEAR)}")
    per_layer = 0
    for name in targets:
        fan_in, fan_out = shape.linear_shapes()[name]
        per_layer += r * (fan_in + fan_out) + (fan_out if dora else 0)
    return per_layer * shape.layers


def recomputed_layer_bytes_per_token(
    shape: LlamaShape, *, r: int, targets: tuple[str, ...] | list[str] = ALL_LINEAR, lora_dropout: float = 0.0
) -> int:
    """Bytes per token that one decoder layer saves for its backward (bf16 activations), i.e. what
    gradient checkpointing holds while it recomputes one layer.

    Korthikanti et al.'s 34*h is a GPT block (GeLU MLP of 4h, no adapters). A Llama block differs:
      RMSNorm (x2):   HF upcasts to fp32 and keeps that copy (4h) plus the normalised bf16 output (2h)
      attention:      q, k before RoPE (2h + 2kv), q, k, v after it (2h + 4kv), SDPA output (2h)
      SwiGLU MLP:     gate out, SiLU out, up out and their product, each 2 * intermediate
      LoRA (per adapted linear): PEFT casts the input to the fp32 adapter dtype and autocast casts
                      it back for the matmul, so a bf16 copy of the input (2 * in) is saved, plus
                      lora_A's output (2r); with lora_dropout > 0 also the dropout mask (1 byte * in).
    """
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    norms = 2 * (4 * h + 2 * h)
    attention = (2 * h + 2 * kv) + (2 * h + 4 * kv) + 2 * h
    mlp = 4 * 2 * i
    fan_in = {name: shape.linear_shapes()[name][0] for name in targets}
    lora = sum(2 * n + 2 * r + (n if lora_dropout > 0 else 0) for n in fan_in.values())
    return norms + attention + mlp + lora


@dataclass
class MemoryEstimate:
    """Bytes per GPU, by part. Parts named in `estimated` rest on modelling choices (what autograd
    keeps, allocator slack); the others are exact arithmetic on the shapes."""

    parts: dict[str, float] = field(default_factory=dict)
    estimated: set[str] = field(default_factory=set)
    trainable_params: int = 0
    total_params: int = 0

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def table(self) -> str:
        rows = [
            f"  {name:<40}{b / GIB:8.2f} GiB{'  (estimate)' if name in self.estimated else ''}"
            for name, b in self.parts.items()
        ]
        rows.append(f"  {'total per GPU':<40}{self.total / GIB:8.2f} GiB")
        if self.estimated:
            rows.append(
                "  (estimate) = modelled, not exact: "
                "what autograd keeps and allocator slack vary by version and kernels"
            )
        return "\n".join(rows)


def estimate_memory(
    shape: LlamaShape,
    *,
    method: str,
    r: int,
    targets: tuple[str, ...] | list[str] = ALL_LINEAR,
    seq_len: int,
    micro_batch: int,
    gradient_checkpointing: bool = True,
    eager_attention: bool = False,
    world_size: int = 1,
    sharding: str = "ddp",  # ddp | zero1 | zero2 | zero3 | fsdp
    dora: bool = False,
    double_quant: bool = True,
    lora_dropout: float = 0.0,
) -> MemoryEstimate:
    trainable = lora_params(shape, r, targets, dora=dora)
    est = MemoryEstimate(trainable_params=trainable, total_params=shape.total_params())
    shard_optim = world_size if sharding in ("zero1", "zero2", "zero3", "fsdp") else 1
    shard_states = world_size if sharding in ("zero2", "zero3", "fsdp") else 1
    shard_weights = world_size if sharding in ("zero3", "fsdp") else 1

    # Base weights: NF4 packs two weights per byte plus one absmax per 64-weight block (fp32, or
    # 8-bit with a second-level fp32 constant per 256 blocks when double-quantized).
    if method == "qlora":
        per_weight = 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)
    else:
        per_weight = 2.0  # bf16 base for lora / dora / rslora
    est.parts["base weights (linear)"] = shape.linear_params() * per_weight / shard_weights
    est.parts["base weights (embed, head, norms)"] = shape.other_params() * 2.0 / shard_weights
    if method == "qlora":
        # Counted at bf16; PEFT's prepare_model_for_kbit_training upcasts every unquantized weight
        # to fp32 and axolotl converts embeddings back only on some paths: up to 2x this row.
        est.estimated.add("base weights (embed, head, norms)")
    # PEFT keeps adapters in fp32 (autocast_adapter_dtype), so weights and grads are 4 bytes each,
    # and AdamW holds two fp32 moments.
    est.parts["adapter weights (fp32)"] = trainable * 4.0 / shard_weights
    est.parts["adapter gradients (fp32)"] = trainable * 4.0 / shard_states
    est.parts["optimizer states (AdamW, fp32)"] = trainable * 8.0 / shard_optim
    if sharding == "ddp" and world_size > 1:
        # DDP all-reduces through its own buckets, a second fp32 copy of every gradient: the HF
        # Trainer leaves gradient_as_bucket_view=False, so the buckets are not views of .grad.
        est.parts["DDP gradient buckets (fp32)"] = trainable * 4.0

    tokens = seq_len * micro_batch
    layer = recomputed_layer_bytes_per_token(shape, r=r, targets=targets, lora_dropout=lora_dropout) * tokens
    if gradient_checkpointing:
        # Each layer's input is kept (bf16); one layer at a time is recomputed in full during backward.
        est.parts["activations: layer inputs kept"] = shape.layers * tokens * shape.hidden * 2
        est.parts["activations: one recomputed layer"] = layer
    else:
        est.parts["activations: every layer"] = shape.layers * layer
    est.estimated.add("activations: one recomputed layer" if gradient_checkpointing else "activations: every layer")
    if eager_attention:
        # Eager attention materialises scores and softmax: 5 * heads * s^2 * b bytes per layer.
        # SDPA and FlashAttention-2 never hold the s x s matrix.
        est.parts["attention scores (eager)"] = (
            5 * shape.heads * seq_len * seq_len * micro_batch * (1 if gradient_checkpointing else shape.layers)
        )
        est.estimated.add("attention scores (eager)")
    # Logits are upcast to fp32 for the loss: logits, their softmax and the gradient.
    est.parts["logits + loss (fp32)"] = tokens * shape.vocab * 4 * 3
    est.parts["CUDA context + allocator slack"] = 1.5 * GIB
    est.estimated.update({"logits + loss (fp32)", "CUDA context + allocator slack"})
    return est
