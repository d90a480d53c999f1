"""The DPO training step both backends share: TRL in kofin's env, unsloth in its own pinned env.

Run as:
    kofin dpo --config configs/dpo/tiny.yaml            # backend trl: kofin calls train(job) in-process
    .venv-unsloth/bin/python training/dpo_recipe.py dpo_job.json   # backend unsloth: what kofin runs

This file imports torch, transformers, TRL, PEFT and unsloth, never kofin: the unsloth env does not
hold kofin (unsloth pins trl<=1.15 and transformers<=5.17, below kofin's). The run-directory contract
is the job file: kofin writes `dpo_job.json` (paths, how to load the policy, TRL's DPOConfig
arguments) into the run's `.partial` folder; this writes the adapter, the tokenizer and
`trainer_log.json` (TRL's log history, the fraction of adapter elements training changed) beside
it, and kofin finishes the run (manifest, COMPLETE). On failure it prints one line
`kofin-dpo-error: <message>` and exits non-zero, so kofin can show the cause, not a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

JOB_FILE = "dpo_job.json"
LOG_FILE = "trainer_log.json"
ERROR_PREFIX = "kofin-dpo-error: "
EXIT_NO_CUDA = 3
EXIT_FAILED = 1


class RecipeError(Exception):
    """A job this env cannot run; the message says why and what to do."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def require_unsloth() -> None:
    """unsloth only runs on an accelerator; say so before its import fails in some other way."""
    import torch

    if not torch.cuda.is_available():
        raise RecipeError(
            f"backend unsloth needs a CUDA GPU; torch {torch.__version__} in {sys.prefix} sees none "
            "(unsloth refuses to import without one). Use backend: trl (or auto) on this host.",
            EXIT_NO_CUDA,
        )
    try:
        import unsloth  # noqa: F401  -- before transformers and TRL, so its patches reach them
    except (ImportError, NotImplementedError, RuntimeError) as err:
        raise RecipeError(f"unsloth does not import in {sys.prefix}: {type(err).__name__}: {err}") from None


# ---------------------------------------------------------------- policy


def lora_config(job: dict[str, Any]):
    from peft import LoraConfig

    lora = job["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        task_type="CAUSAL_LM",
    )


def load_policy_trl(job: dict[str, Any]):
    """(model, peft_config for DPOTrainer or None when the model already carries its adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"dtype": _dtype(job["precision"])}
    if job["load_in_4bit"]:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_dtype(job["precision"]),
        )
    model = AutoModelForCausalLM.from_pretrained(job["base_model"], **kwargs)
    if job["sft_run"] is None:
        return model, lora_config(job)
    if job["adapter_mode"] == "merge":
        model = PeftModel.from_pretrained(model, job["sft_run"]).merge_and_unload()
        return model, lora_config(job)
    # Stacked: keep training the SFT adapter; TRL adds a frozen copy of it as the reference.
    return PeftModel.from_pretrained(model, job["sft_run"], is_trainable=True), None


def load_policy_unsloth(job: dict[str, Any]):
    from unsloth import FastLanguageModel

    checkpointing = "unsloth" if job["gradient_checkpointing"] else False
    common = dict(
        max_seq_length=job["max_length"],
        dtype=_dtype(job["precision"]),
        load_in_4bit=job["load_in_4bit"],
        use_gradient_checkpointing=checkpointing,
        local_files_only=True,
        use_exact_model_name=True,
    )  # a local folder, never swapped for an unsloth/* hub name
    if job["sft_run"] is not None:
        # unsloth's own adapter path: given the SFT run folder it loads the base named in
        # adapter_config.json, attaches the adapter trainable and runs patch_peft_model (k-bit
        # preparation, its checkpointing mode, fused LoRA kernels where lora_dropout is 0).
        model, _ = FastLanguageModel.from_pretrained(model_name=job["sft_run"], **common)
        return model, None
    model, _ = FastLanguageModel.from_pretrained(model_name=job["base_model"], **common)
    lora = job["lora"]
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        random_state=job["trainer_args"]["seed"],
        use_gradient_checkpointing=checkpointing,
    )
    return model, None


# ---------------------------------------------------------------- adapter dtype


def trainable_fp32_copies(model) -> dict[str, Any]:
    """The trainable weights as they are now, in fp32 on the CPU."""
    import torch

    return {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in model.named_parameters() if p.requires_grad}


def keep_adapters_fp32(model, before: dict[str, Any]) -> None:
    """Undo TRL's bf16 cast of the adapter on a quantized base.

    TRL (>= 1.x) casts every trainable weight of a 4-bit model to bf16, after the QLoRA paper. At
    DPO's learning rates (~5e-6) most updates are below half a bf16 ulp of the weight and round
    away: on the tiny model 12% of LoRA elements moved in 20 AdamW steps. fp32 adapters cost
    4 bytes instead of 2 per trainable parameter and move every element. Weights that existed
    before the trainer (a stacked SFT adapter) get their exact fp32 values back.
    """
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = before[name].to(param.device) if name in before else param.data.float()


def fraction_changed(before: dict[str, Any], model) -> float:
    """Share of adapter elements whose value differs from the start of training."""
    changed = total = 0
    for name, param in model.named_parameters():
        if name in before:
            now = param.detach().to("cpu", before[name].dtype)
            changed += int((now != before[name]).sum())
            total += now.numel()
    return changed / total if total else 0.0


# ---------------------------------------------------------------- training


def train(job: dict[str, Any]) -> dict[str, Any]:
    """Load the policy, run TRL's DPOTrainer, save adapter + tokenizer into job['output_dir']."""
    if job["backend"] == "unsloth":
        require_unsloth()
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = Path(job["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer"])
    model, peft_config = (load_policy_unsloth if job["backend"] == "unsloth" else load_policy_trl)(job)
    pairs = Dataset.from_list(
        [json.loads(line) for line in Path(job["pairs"]).read_text(encoding="utf-8").splitlines()]
    )
    loaded = trainable_fp32_copies(model)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=DPOConfig(**job["trainer_args"]),
        train_dataset=pairs,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    keep_adapters_fp32(trainer.model, loaded)
    del loaded
    if not job["progress"]:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # per-step records still reach the log history
    start = trainable_fp32_copies(trainer.model)
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    changed = fraction_changed(start, trainer.model)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    # Only the trained adapter: TRL's frozen "ref" copy of a stacked adapter is not an output.
    policy = trainer.model
    assert isinstance(policy, PeftModel), "every policy trains an adapter: loaded with one, or given peft_config"
    policy.save_pretrained(str(out), selected_adapters=["default"])
    tokenizer.save_pretrained(str(out))
    return {
        "log_history": trainer.state.log_history,
        "adapter_elements_changed": changed,
        "peak_gpu_memory_gib_training": peak,
        "versions": env_versions(),
    }


def env_versions() -> dict[str, str]:
    """The libraries of the env the step ran in (for unsloth, not kofin's own)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "prefix": sys.prefix}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        result = train(job)
    except RecipeError as err:
        print(ERROR_PREFIX + str(err), file=sys.stderr, flush=True)
        return err.code
    out = Path(job["output_dir"]) / LOG_FILE
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)  # kofin reads it only once the step has finished
    return 0


if __name__ == "__main__":
    # Run as a script, this folder heads sys.path; its sibling modules (cli, launch, memory ...)
    # must not shadow a library's top-level module of the same name.
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    sys.exit(main(sys.argv))
