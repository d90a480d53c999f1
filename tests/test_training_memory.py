"""Dry-run arithmetic for the reference recipe, checked against a hand computation."""

from __future__ import annotations

import json

import pytest

from kofin.training.memory import ALL_LINEAR, EEVE_10_8B, GIB, LlamaShape, estimate_memory, lora_params


def test_eeve_r256_all_linear_is_1_007b_trainable():
    # Per layer, r * (in + out) summed over the seven linears of EEVE's block:
    # q,o: 4096+4096; k,v: 4096+1024 (8 KV heads x 128); gate,up,down: 4096+14336.
    per_layer = 256 * (2 * 8192 + 2 * 5120 + 3 * 18432)
    assert per_layer == 20_971_520
    assert lora_params(EEVE_10_8B, 256, ALL_LINEAR) == 48 * per_layer == 1_006_632_960
    assert EEVE_10_8B.total_params() == 10_804_924_416  # 10.8B: the name checks out
    assert round(lora_params(EEVE_10_8B, 256) / EEVE_10_8B.total_params(), 3) == 0.093


def test_dora_adds_one_magnitude_per_output_feature():
    shape = LlamaShape(hidden=64, intermediate=224, layers=2, heads=4, kv_heads=1, vocab=512)
    outs = 64 + 16 + 16 + 64 + 224 + 224 + 64
    assert lora_params(shape, 8, dora=True) - lora_params(shape, 8) == 2 * outs


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match=r"unknown target modules \['qkv'\]"):
        lora_params(EEVE_10_8B, 8, ["qkv"])


def test_reference_recipe_fits_the_planned_25_to_32_gb():
    est = estimate_memory(EEVE_10_8B, method="qlora", r=256, seq_len=4096, micro_batch=1)
    assert 25e9 <= est.total <= 32e9, est.table()
    # Hand computation of the parts that do not depend on modelling choices:
    assert est.parts["optimizer states (AdamW, fp32)"] == 1_006_632_960 * 8
    assert est.parts["base weights (linear)"] == pytest.approx(EEVE_10_8B.linear_params() * (0.5 + 1 / 64 + 4 / 16384))
    assert "total per GPU" in est.table()


def test_sharding_and_method_move_the_estimate_the_right_way():
    common = dict(r=256, seq_len=4096, micro_batch=1)
    ddp = estimate_memory(EEVE_10_8B, method="qlora", **common)
    zero2 = estimate_memory(EEVE_10_8B, method="qlora", world_size=8, sharding="zero2", **common)
    bf16 = estimate_memory(EEVE_10_8B, method="lora", **common)
    no_ckpt = estimate_memory(EEVE_10_8B, method="qlora", gradient_checkpointing=False, **common)
    assert zero2.parts["optimizer states (AdamW, fp32)"] == ddp.parts["optimizer states (AdamW, fp32)"] / 8
    assert bf16.total - ddp.total > 15e9  # 16-bit base linears: 20.9 GB instead of 5.4 GB
    kept = ddp.parts["activations: layer inputs kept"] + ddp.parts["activations: one recomputed layer"]
    assert no_ckpt.parts["activations: every layer"] > 10 * kept


def test_small_llama_against_a_hand_computation_with_the_ddp_bucket():
    """Every part, by hand: hidden 64, MLP 224, 2 layers, 4 heads / 1 KV head (head_dim 16), vocab 512,
    r=8 on all linears, 2 x 32 tokens, QLoRA, lora_dropout 0.1, DDP over 2 GPUs."""
    shape = LlamaShape(hidden=64, intermediate=224, layers=2, heads=4, kv_heads=1, vocab=512)
    est = estimate_memory(
        shape, method="qlora", r=8, seq_len=32, micro_batch=2, world_size=2, sharding="ddp", lora_dropout=0.1
    )
    # layers * r * (in + out): q,o 64+64; k,v 64+16; gate,up,down 64+224
    trainable = 2 * 8 * (128 + 80 + 80 + 128 + 3 * 288)
    assert est.trainable_params == trainable == 20_480
    assert est.parts["adapter weights (fp32)"] == 81_920
    assert est.parts["adapter gradients (fp32)"] == 81_920
    assert est.parts["optimizer states (AdamW, fp32)"] == 163_840
    assert est.parts["DDP gradient buckets (fp32)"] == 81_920  # a second fp32 copy of every gradient
    assert est.parts["activations: layer inputs kept"] == 2 * 64 * 64 * 2  # layers * tokens * hidden * bf16
    # One recomputed layer, bytes per token:
    norms = 2 * (4 * 64 + 2 * 64)  # fp32 upcast + bf16 output, two RMSNorms: 768
    attention = (2 * 64 + 2 * 16) + (2 * 64 + 4 * 16) + 2 * 64  # q,k before RoPE; q,k,v after; SDPA out: 480
    mlp = 4 * 2 * 224  # gate, SiLU, up, product: 1792
    lora = 6 * (2 * 64 + 2 * 8 + 64) + (2 * 224 + 2 * 8 + 224)  # cast copy + A output + dropout mask: 1936
    assert (norms, attention, mlp, lora) == (768, 480, 1792, 1936)
    assert est.parts["activations: one recomputed layer"] == 64 * (768 + 480 + 1792 + 1936) == 318_464
    assert est.parts["logits + loss (fp32)"] == 64 * 512 * 4 * 3
    assert est.parts["CUDA context + allocator slack"] == 1.5 * GIB
    assert est.estimated == {
        "activations: one recomputed layer",
        "logits + loss (fp32)",
        "CUDA context + allocator slack",
        "base weights (embed, head, norms)",
    }  # QLoRA: fp32 upcast of unquantized weights varies
    single = estimate_memory(shape, method="qlora", r=8, seq_len=32, micro_batch=2, lora_dropout=0.1)
    assert est.total - single.total == 81_920 and "DDP gradient buckets (fp32)" not in single.parts
    table = est.table()
    assert "activations: one recomputed layer" in table and "(estimate)" in table
    assert [line for line in table.splitlines() if line.strip().startswith("DDP")][0].endswith("GiB")  # exact, unmarked


def test_reference_recipe_on_8_gpus_counts_the_bucket_and_the_swiglu_layer():
    one = estimate_memory(EEVE_10_8B, method="qlora", r=256, seq_len=4096, micro_batch=1)
    eight = estimate_memory(EEVE_10_8B, method="qlora", r=256, seq_len=4096, micro_batch=1, world_size=8)
    assert eight.total - one.total == 1_006_632_960 * 4  # 3.75 GiB the old estimate left out
    # SwiGLU at 3.5h and PEFT's cast copies: 275,968 bytes per token (67.4h), not Korthikanti's 34h.
    per_token = 2 * 6 * 4096 + (4 * 4096 + 6 * 1024 + 2 * 4096) + 8 * 14336 + 2 * (6 * 4096 + 14336) + 7 * 2 * 256
    assert per_token == 275_968
    assert one.parts["activations: one recomputed layer"] == 4096 * per_token
    assert 25e9 <= one.total <= 32e9 and eight.total / GIB < 32


def test_shape_reads_config_json(tiny_model):
    shape = LlamaShape.from_config(tiny_model)
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert (shape.hidden, shape.layers, shape.vocab) == (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["vocab_size"],
    )
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert shape.total_params() == sum(p.numel() for p in model.parameters())
