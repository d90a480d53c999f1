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
    assert no_ckpt.parts["activations"] > 10 * ddp.parts["activations"]


def test_shape_reads_config_json(tiny_model):
    shape = LlamaShape.from_config(tiny_model)
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert (shape.hidden, shape.layers, shape.vocab) == (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"])
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert shape.total_params() == sum(p.numel() for p in model.parameters())
