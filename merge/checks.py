"""Checks around a merge: compatibility before any tensor is read, soundness after.

Run as part of:
    kofin merge --config configs/merge/tiny.yaml

Before: every model's config.json and tokenizer files against the tuned model's (architecture,
hidden sizes, vocabulary and special tokens, dtype). A mismatch names both models and the field.
After: every tensor the parents have is in the merged model with its shape, none holds NaN/Inf
(read one tensor at a time), the merged model loads with transformers and generates, and a
perplexity probe on held-out Korean text scores the merged model and its parents.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.merge.adapter import MergeInputError, read_model_config, refuse_quantized

# Fields that must agree for tensors to line up one to one.
SHAPE_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
WEIGHTLESS_TOKENS = ("pad_token",)  # differences a merge survives: warned about, not refused
FLOAT_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_PROBE = Path(__file__).with_name("heldout_ko.txt")


class MergeCheckError(KofinError):
    """The merged model failed a post-merge check; the run is not marked complete."""


@dataclass
class ModelRef:
    """A model as the checks name it: its role in the config and its folder."""

    role: str
    path: Path
    tokenizer: Path | None = None  # where its tokenizer lives, when not beside the weights
    shown: str | None = None  # how to name it when the folder alone would mislead

    def __str__(self) -> str:
        return f"{self.role} ({self.shown or self.path})"


# ---------------------------------------------------------------- before merging


def tokenizer_facts(ref: ModelRef) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ref.tokenizer or ref.path))
    return {
        "vocab": tok.get_vocab(),
        "special": {k: (getattr(tok, k), getattr(tok, k + "_id")) for k in SPECIAL_TOKENS},
        "chat_template": tok.chat_template,
    }


def model_dtype(config: dict[str, Any]) -> str | None:
    return config.get("dtype") or config.get("torch_dtype")


def check_compatible(reference: ModelRef, others: list[ModelRef], *, tokenizer_source: object) -> dict[str, Any]:
    """Raise MergeInputError on the first incompatible field; return what was compared."""
    ref_cfg = read_model_config(reference.path)
    ref_tok = tokenizer_facts(reference)
    dtypes = {}
    for ref in [reference, *others]:
        refuse_quantized(ref.path, ref.role)
        cfg = read_model_config(ref.path)
        dtype = model_dtype(cfg)
        if dtype is not None and dtype not in FLOAT_DTYPES:
            raise MergeInputError(
                f"{ref}: dtype {dtype} cannot be merged; mergekit needs float32, bfloat16 or float16 weights"
            )
        dtypes[ref.role] = dtype
    warnings: list[str] = []
    for ref in others:
        cfg = read_model_config(ref.path)
        for key in SHAPE_FIELDS:
            if ref_cfg.get(key) != cfg.get(key):
                raise MergeInputError(
                    f"{ref} and {reference} differ in config.json field {key}: {cfg.get(key)!r} vs "
                    f"{ref_cfg.get(key)!r}; mergekit can only merge models of the same architecture and sizes"
                )
        if tokenizer_source is None:
            warnings += _same_tokenizer(reference, ref_tok, ref_cfg, ref, tokenizer_facts(ref), cfg)
    for warning in warnings:
        print(f"kofin merge: warning: {warning}", file=sys.stderr, flush=True)
    tokenizer_fields = ["vocab_size", "vocabulary", *SPECIAL_TOKENS] if tokenizer_source is None else []
    # dtypes as stored in each folder's config.json (the tuned model's is its base's until step 1 writes it)
    return {
        "fields": list(SHAPE_FIELDS) + tokenizer_fields + ["dtype"],
        "stored_dtypes": dtypes,
        "vocab_size": len(ref_tok["vocab"]),
        "warnings": warnings,
    }


def _same_tokenizer(
    reference: ModelRef,
    ref_tok: dict[str, Any],
    ref_cfg: dict[str, Any],
    ref: ModelRef,
    tok: dict[str, Any],
    cfg: dict[str, Any],
) -> list[str]:
    """Raise on a difference that misaligns embedding rows; return warnings for those that do not."""
    fix = (
        "set tokenizer_source: union (or base, or model with tokenizer_model) to let mergekit build one vocabulary "
        "and remap each model's embedding rows, or merge models that share a tokenizer"
    )
    if cfg.get("vocab_size") != ref_cfg.get("vocab_size"):
        raise MergeInputError(
            f"{ref} and {reference} differ in vocab_size: {cfg.get('vocab_size')} vs "
            f"{ref_cfg.get('vocab_size')} (config.json); {fix}"
        )
    if tok["vocab"] != ref_tok["vocab"]:
        moved = sorted(t for t in ref_tok["vocab"].keys() ^ tok["vocab"].keys()) or sorted(
            t for t in ref_tok["vocab"] if tok["vocab"].get(t) != ref_tok["vocab"][t]
        )
        raise MergeInputError(
            f"{ref} and {reference} differ in tokenizer vocabulary ({len(tok['vocab'])} vs "
            f"{len(ref_tok['vocab'])} tokens; e.g. {moved[:3]}); {fix}"
        )
    warnings = []
    for key in SPECIAL_TOKENS:
        if tok["special"][key] == ref_tok["special"][key]:
            continue
        if key in WEIGHTLESS_TOKENS:
            # Padding is masked out of attention and loss: which id pads changes no weight, so the
            # merge is sound; the merged model keeps the tuned model's tokenizer.
            warnings.append(
                f"{ref} and {reference} differ in {key} ({tok['special'][key]} vs "
                f"{ref_tok['special'][key]}); merging anyway: padding is masked out of attention and loss, so "
                "no weight depends on which id pads"
            )
            continue
        raise MergeInputError(
            f"{ref} and {reference} differ in special token {key}: "
            f"{tok['special'][key]} vs {ref_tok['special'][key]}; {fix}"
        )
    return warnings


# ---------------------------------------------------------------- after merging


def tensor_shapes(model: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors model, from the file headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(Path(model).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    if not shapes:
        raise MergeCheckError(f"{model}: no *.safetensors files")
    return shapes


def check_tensors(merged: Path, expected: dict[str, tuple[int, ...]], *, vocab_may_change: bool) -> dict[str, Any]:
    got = tensor_shapes(merged)
    missing = sorted(expected.keys() - got.keys())
    if missing:
        raise MergeCheckError(f"merged model {merged} lacks {len(missing)} tensor(s) the parents have: {missing[:5]}")
    wrong = [
        (n, got[n], s) for n, s in expected.items() if got[n] != s and not (vocab_may_change and got[n][1:] == s[1:])
    ]  # a new vocabulary changes rows only
    if wrong:
        raise MergeCheckError(f"merged model {merged}: tensor shapes differ from the parents': {wrong[:3]}")
    return {"tensors": len(got), "expected": len(expected), "extra": sorted(got.keys() - expected.keys())}


def check_finite(model: Path) -> dict[str, Any]:
    """Every tensor free of NaN/Inf, read one at a time so memory stays at one tensor."""
    import torch
    from safetensors import safe_open

    bad, scanned = [], 0
    for shard in sorted(Path(model).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                scanned += t.numel()
                finite = torch.isfinite(t)
                if not bool(finite.all()):
                    bad.append(f"{name} in {shard.name}: {int((~finite).sum())} NaN/Inf of {t.numel()}")
                del t, finite
    if bad:
        raise MergeCheckError(
            f"merged model {model} holds non-finite weights: "
            + "; ".join(bad[:5])
            + (f"; ... {len(bad) - 5} more tensors" if len(bad) > 5 else "")
            + ". Check the parents for NaN/Inf and the merge parameters."
        )
    return {"values_scanned": scanned}


def runtime(device: str, dtype: str, merge_dtype: str) -> tuple[str, str]:
    """(device, dtype) the checks run models in, with `auto` resolved."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = merge_dtype if device == "cuda" else "float32"
    return device, dtype


def load_causal_lm(path: Path, device: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), device_map=device).eval()


def check_generates(model, tokenizer, prompt: str, n_tokens: int) -> dict[str, Any]:
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    ids = ids.to(model.device)
    with torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, ids["input_ids"].shape[1] :]
    if len(new) < n_tokens:
        raise MergeCheckError(f"merged model generated {len(new)} tokens, expected {n_tokens}")
    return {"prompt": prompt, "new_tokens": len(new), "text": tokenizer.decode(new, skip_special_tokens=True)}


def probe_passages(path: Path | None) -> list[str]:
    text = Path(path or DEFAULT_PROBE).read_text(encoding="utf-8")
    passages = [p.strip() for p in text.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
    if not passages:
        raise MergeInputError(f"checks.probe_file: {path} holds no passages (separate them with blank lines)")
    return passages


def perplexity(model, tokenizer, passages: list[str], max_tokens: int) -> dict[str, Any]:
    """Token-weighted perplexity over the passages (each cut at max_tokens)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in passages:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"].to(
                model.device
            )
            if ids.shape[1] < 2:
                continue
            loss = model(input_ids=ids, labels=ids).loss.float().item()
            total_nll += loss * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
    ppl = math.exp(total_nll / total_tokens) if total_tokens else float("nan")
    if not math.isfinite(ppl):
        raise MergeCheckError(f"perplexity probe gave {ppl}; the model's outputs are not finite")
    return {"perplexity": round(ppl, 4), "tokens": total_tokens, "passages": len(passages)}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
