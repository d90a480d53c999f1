"""Preference tuning with DPO on top of an SFT run: unsloth on CUDA, the same TRL recipe elsewhere.

Run as:
    kofin dpo --config configs/dpo/tiny.yaml        # embedded tiny model, CPU, seconds
    kofin dpo --config configs/dpo/eeve_unsloth.yaml

Reads top to bottom: resolve the SFT run and its base model -> check the pairs -> pick the
backend -> load the policy (SFT adapter stacked, or merged and a new adapter added) -> TRL
DPOTrainer -> save the adapter, tokenizer and per-step rewards. The reference model is always
the SFT policy: with a stacked adapter TRL keeps a frozen copy of it, with a merged one the
reference is the merged model with the new adapter disabled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.rundir import atomic_write_json, open_run, require_complete
from kofin.training.dpo_config import DpoConfig

PAIRS_FILE = "dpo/train.jsonl"
MAX_LISTED = 20


class DpoInputError(KofinError):
    """An SFT run, base model or preference file DPO cannot use."""


# ---------------------------------------------------------------- inputs


def resolve_base_model(cfg: DpoConfig) -> Path:
    if cfg.base_model is not None:
        path = cfg.base_model
    elif cfg.sft_run is not None:
        # The adapter names the exact base it was trained on.
        adapter_cfg = json.loads((cfg.sft_run / "adapter_config.json").read_text(encoding="utf-8"))
        path = Path(adapter_cfg["base_model_name_or_path"])
    else:
        from kofin.tiny import default_tiny_model

        path = default_tiny_model()
    if not (path / "config.json").is_file():
        raise DpoInputError(f"base_model: {path} has no config.json; point base_model at the local model folder the SFT run used")
    return path


def resolve_sft_run(cfg: DpoConfig) -> Path | None:
    if cfg.sft_run is None:
        return None
    require_complete(cfg.sft_run, "sft", what="sft_run")
    if not (cfg.sft_run / "adapter_model.safetensors").is_file():
        raise DpoInputError(f"sft_run: {cfg.sft_run} holds no adapter_model.safetensors; re-run `kofin sft`")
    return cfg.sft_run


def load_pairs(cfg: DpoConfig) -> tuple[list[dict[str, Any]], list[Path]]:
    """Every preference pair, schema-checked; problems name the file and line."""
    from kofin.data_ko.formats import read_records
    from kofin.data_ko.validate import check_preference_row

    rows, files, problems = [], [], []
    for i, path in enumerate(cfg.preferences):
        if path.is_dir():
            require_complete(path, "data", what=f"preferences.{i}")
            path = path / PAIRS_FILE
        if not path.is_file():
            problems.append(f"preferences.{i}: {path} does not exist; build pairs with `kofin data build-dpo` or fix the path")
            continue
        files.append(path)
        for where, row in read_records(path):
            found = check_preference_row(row)
            problems += [f"{where}  {p}" for p in found]
            if not found:
                rows.append({"_where": where, **{k: row[k] for k in ("prompt", "chosen", "rejected")}})
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else [])
        raise DpoInputError("the preference data cannot be used:\n  " + "\n  ".join(shown))
    if not rows:
        raise DpoInputError("preferences: no pairs found")
    return rows, files


def choose_backend(requested: str, *, merge_adapter: bool = False) -> str:
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    have_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "unsloth" and not cuda:
        raise DpoInputError("backend 'unsloth' needs a CUDA GPU (unsloth refuses to import without one); use backend: trl or auto")
    if requested == "unsloth" and not have_unsloth:
        raise DpoInputError("backend 'unsloth': unsloth is not installed in this env; install it on the GPU host or use backend: trl")
    if requested == "unsloth" and merge_adapter:
        raise DpoInputError("backend unsloth supports adapter_mode: stack; use backend: trl (or auto) for adapter_mode: merge")
    if requested == "auto":
        return "unsloth" if cuda and have_unsloth and not merge_adapter else "trl"
    return requested


def check_prompt_lengths(rows: list[dict[str, Any]], tokenizer, max_length: int) -> None:
    """A prompt that fills max_length leaves the answers nothing: TRL would train on empty pairs."""
    long = []
    for i, row in enumerate(rows):
        text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])  # the template wrote its own specials
        if n >= max_length:
            long.append((row.get("_where", f"pair {i + 1}"), n))
    if long:
        shown = [f"{where}  prompt is {n} tokens >= training.max_length {max_length}" for where, n in long[:MAX_LISTED]]
        if len(long) > MAX_LISTED:
            shown.append(f"... and {len(long) - MAX_LISTED} more")
        shown.append(f"fix: raise training.max_length above {max(n for _, n in long)}, or shorten these prompts")
        raise DpoInputError("prompts leave no room for the answers:\n  " + "\n  ".join(shown))


# ---------------------------------------------------------------- policy


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def lora_config(cfg: DpoConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM",
    )


def load_policy_trl(cfg: DpoConfig, base: Path, sft_run: Path | None):
    """(model, peft_config for DPOTrainer or None when the model already carries its adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": _dtype(cfg.training.precision)}
    if cfg.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_dtype(cfg.training.precision),
        )
    model = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
    if sft_run is None:
        return model, lora_config(cfg)
    if cfg.adapter_mode == "merge":
        model = PeftModel.from_pretrained(model, str(sft_run)).merge_and_unload()
        return model, lora_config(cfg)
    # Stacked: keep training the SFT adapter; TRL adds a frozen copy of it as the reference.
    return PeftModel.from_pretrained(model, str(sft_run), is_trainable=True), None


def load_policy_unsloth(cfg: DpoConfig, base: Path, sft_run: Path | None):
    from unsloth import FastLanguageModel  # lazy: raises without a GPU

    if sft_run is not None and cfg.adapter_mode == "merge":
        raise DpoInputError("backend unsloth supports adapter_mode: stack; use backend: trl for adapter_mode: merge")
    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(base), max_seq_length=cfg.training.max_length, dtype=_dtype(cfg.training.precision),
        load_in_4bit=cfg.load_in_4bit,  # a local path, and HF_HUB_OFFLINE is set: nothing is fetched
    )
    if sft_run is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(sft_run), is_trainable=True), None
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules), random_state=cfg.training.seed,
        use_gradient_checkpointing="unsloth" if cfg.training.gradient_checkpointing else False,
    )
    return model, None


# ---------------------------------------------------------------- run


def dpo_args(cfg: DpoConfig, out: Path, *, progress: bool, cuda: bool):
    from trl import DPOConfig as TrlDpoConfig

    t = cfg.training
    return TrlDpoConfig(
        output_dir=str(out / "trainer"), beta=t.beta, loss_type=t.loss_type, label_smoothing=t.label_smoothing,
        max_length=t.max_length, per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_train_epochs=t.num_epochs,
        max_steps=t.max_steps or -1, learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
        bf16=t.precision == "bf16", fp16=t.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing, logging_steps=t.logging_steps, seed=t.seed,
        save_strategy="no", report_to=[], use_cpu=not cuda, dataloader_num_workers=0,
        disable_tqdm=not progress,
    )


def main(cfg: DpoConfig, *, progress: bool = True) -> Path:
    sft_run = resolve_sft_run(cfg)
    base = resolve_base_model(cfg)
    rows, files = load_pairs(cfg)
    backend = choose_backend(cfg.backend, merge_adapter=sft_run is not None and cfg.adapter_mode == "merge")
    if backend == "unsloth":
        import unsloth  # noqa: F401  -- first, so its patches reach transformers and TRL

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(sft_run or base))
    check_prompt_lengths(rows, tokenizer, cfg.training.max_length)
    inputs: dict[str, Path | None] = {"base_model": base, "sft_run": sft_run}
    inputs.update({f"preferences_{i}": p for i, p in enumerate(files)})
    _quiet_library_noise(progress)
    with open_run("dpo", cfg, inputs=inputs) as run:
        load = load_policy_unsloth if backend == "unsloth" else load_policy_trl
        model, peft_config = load(cfg, base, sft_run)
        pairs = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
        trainer = DPOTrainer(
            model=model, ref_model=None, args=dpo_args(cfg, run.path, progress=progress, cuda=torch.cuda.is_available()),
            train_dataset=pairs, processing_class=tokenizer, peft_config=peft_config,
        )
        if not progress:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # per-step records still go to metrics.jsonl
        trainer.train()
        # Only the trained adapter: TRL's frozen "ref" copy of a stacked adapter is not an output.
        trainer.model.save_pretrained(str(run.path), selected_adapters=["default"])
        tokenizer.save_pretrained(str(run.path))
        shutil.rmtree(run.path / "trainer", ignore_errors=True)
        run.metrics.update(summarize(trainer.state.log_history, run.path, backend, cfg, len(rows), sft_run, base))
        # Beside the adapter, not only in the manifest: a merged-mode adapter applies to base + SFT.
        atomic_write_json(run.path / "adapter_base.json", run.metrics["adapter_base"])
    return run.final_dir


def _quiet_library_noise(progress: bool) -> None:
    import warnings

    # transformers 5.23 renamed gradient_checkpointing and warns even when TRL passes False;
    # nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* deprecated", category=FutureWarning)
    if not progress:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()


def summarize(history: list[dict[str, Any]], out: Path, backend: str, cfg: DpoConfig, pairs: int,
              sft_run: Path | None, base: Path) -> dict[str, Any]:
    """Per-step rewards to metrics.jsonl; first/last margins and accuracies for the manifest."""
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for record in history:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    steps = [h for h in history if "rewards/margins" in h]
    final = next((h for h in reversed(history) if "train_runtime" in h), {})
    pick = lambda h, k: round(h[k], 6) if h and k in h else None  # noqa: E731
    first, last = (steps[0], steps[-1]) if steps else ({}, {})
    return {
        "backend": backend,
        "pairs": pairs,
        "steps": len(steps),
        "loss_first": pick(first, "loss"), "loss_last": pick(last, "loss"),
        "reward_margin_first": pick(first, "rewards/margins"), "reward_margin_last": pick(last, "rewards/margins"),
        "reward_accuracy_last": pick(last, "rewards/accuracies"),
        "train_runtime_s": final.get("train_runtime"),
        # TRL's num_tokens counts prompt + both answers of every pair seen, padding excluded.
        "tokens_per_s": round(last["num_tokens"] / final["train_runtime"], 1) if "num_tokens" in last and final.get("train_runtime") else None,
        # What the adapter applies to, for the merge stage.
        "adapter_base": {"base_model": str(base),
                         "merged_first": [str(sft_run)] if sft_run is not None and cfg.adapter_mode == "merge" else []},
    }
