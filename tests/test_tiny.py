"""The embedded tiny model: EEVE-shaped, deterministic, loadable, with EEVE's chat template."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kofin.rundir import require_complete, sha256_file

CORPUS_TEXT = "가람은행 정기예금은 1년 만기 상품입니다. 예금자보호 한도는 1억원입니다.\n" * 50


@pytest.fixture(scope="module")
def fixed_corpus(tmp_path_factory):
    # The bundled KB grows over time; pin the corpus so the hash comparison is about the builder.
    d = tmp_path_factory.mktemp("corpus")
    (d / "a.md").write_text("---\ntitle: 예시\n---\n# 예시\n" + CORPUS_TEXT, encoding="utf-8")
    return d


def build(out, *overrides):
    cmd = [sys.executable, "-m", "kofin.cli", "tiny", "build", str(out), *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, fixed_corpus):
    a = build(tmp_path / "a", f"corpus={fixed_corpus}", "num_hidden_layers=2")
    b = build(tmp_path / "b", f"corpus={fixed_corpus}", "num_hidden_layers=2")
    c = build(tmp_path / "c", f"corpus={fixed_corpus}", "num_hidden_layers=2", "seed=1")
    for name in ("model.safetensors", "tokenizer.json"):
        assert sha256_file(a / name) == sha256_file(b / name), name
    assert sha256_file(a / "model.safetensors") != sha256_file(c / "model.safetensors")
    assert sha256_file(a / "tokenizer.json") == sha256_file(c / "tokenizer.json")


def test_default_model_is_eeve_shaped(tiny_model):
    cfg = json.loads((tiny_model / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["intermediate_size"] / cfg["hidden_size"] == 14336 / 4096
    assert cfg["num_attention_heads"] / cfg["num_key_value_heads"] == 32 / 8
    assert 2 <= cfg["num_hidden_layers"] <= 4 and 64 <= cfg["hidden_size"] <= 256
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    assert cfg["vocab_size"] % 64 == 0
    m = require_complete(tiny_model, "tiny")
    assert m["metrics"]["corpus_documents"] >= 1


def test_loads_generates_and_speaks_korean(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    text = "예금자보호 한도는 얼마인가요?"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in ids  # byte-level: every Korean character encodes
    # The corpus-trained BPE merges Hangul: far fewer tokens than UTF-8 bytes.
    assert len(ids) < len(text.encode()) / 2
    out = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False)
    assert out.shape[1] == len(ids) + 5


def test_chat_template_is_eeve_format(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    msgs = [{"role": "user", "content": "안녕하세요"}, {"role": "assistant", "content": "네, 무엇을 도와드릴까요?"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant.")
    assert text.endswith("\nHuman: 안녕하세요\nAssistant: 네, 무엇을 도와드릴까요?</s>")
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("\nHuman: 안녕하세요\nAssistant:")
    sys_text = tok.apply_chat_template([{"role": "system", "content": "시스템"}] + msgs, tokenize=False)
    assert sys_text.startswith("시스템\nHuman: ")
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == " 네, 무엇을 도와드릴까요?</s>"  # the space is the answer's (see tiny.py)


def test_bad_shape_is_reported(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kofin.cli",
            "tiny",
            "build",
            str(tmp_path / "x"),
            "hidden_size=100",
            "num_attention_heads=3",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "hidden_size (100) must be divisible by num_attention_heads (3)" in res.stderr
    assert not (tmp_path / "x").exists()
