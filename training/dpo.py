"""Preference tuning with DPO on top of an SFT run: unsloth on CUDA, the same TRL recipe elsewhere.

Run as:
    kofin dpo --config configs/dpo/tiny.yaml        # embedded tiny model, CPU, seconds
    kofin dpo --config configs/dpo/eeve_unsloth.yaml

Reads top to bottom: resolve the SFT run and its base model -> check the pairs -> pick the
backend -> write the job (dpo_job.json + pairs.jsonl in the run) -> train it with
training/dpo_recipe.py, in-process for TRL or in the pinned unsloth env (.venv-unsloth) as a
subprocess -> per-step rewards, lineage and the manifest. The recipe loads the policy (SFT adapter
stacked, or merged and a new adapter added; unsloth through its own adapter path), keeps the
adapter in fp32 and runs TRL's DPOTrainer. The reference model is always the SFT policy: with a
stacked adapter TRL keeps a frozen copy of it, with a merged one the reference is the merged model
with the new adapter disabled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kofin import manifest_keys as keys
from kofin.errors import KofinError
from kofin.rundir import atomic_write_json, atomic_write_text, lineage_record, open_run, require_complete
from kofin.stages import ADAPTER_STAGES
from kofin.training import dpo_recipe as recipe
from kofin.training.dpo_config import DpoConfig

PAIRS_FILE = "dpo/train.jsonl"
PAIRS_COPY = "pairs.jsonl"  # the checked pairs, as the job trains on them
RECIPE = Path(recipe.__file__)
UNSLOTH_ENV_VAR = "KOFIN_UNSLOTH_ENV"
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
        raise DpoInputError(
            f"base_model: {path} has no config.json; point base_model at the local model folder the SFT run used"
        )
    return path


def resolve_sft_run(cfg: DpoConfig) -> Path | None:
    if cfg.sft_run is None:
        return None
    stage = require_complete(cfg.sft_run, ADAPTER_STAGES, what="sft_run")["stage"]  # pooled or federated
    if not (cfg.sft_run / "adapter_model.safetensors").is_file():
        raise DpoInputError(f"sft_run: {cfg.sft_run} holds no adapter_model.safetensors; re-run `kofin {stage}`")
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
            problems.append(
                f"preferences.{i}: {path} does not exist; build pairs with `kofin data build-dpo` or fix the path"
            )
            continue
        files.append(path)
        for where, row in read_records(path):
            found = check_preference_row(row)
            problems += [f"{where}  {p}" for p in found]
            if not found:
                rows.append({"_where": where, **{k: row[k] for k in ("prompt", "chosen", "rejected")}})
    if problems:
        shown = problems[:MAX_LISTED] + (
            [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise DpoInputError("the preference data cannot be used:\n  " + "\n  ".join(shown))
    if not rows:
        raise DpoInputError("preferences: no pairs found")
    return rows, files


def unsloth_env(configured: Path | None = None) -> Path:
    """The env holding unsloth: the config key, then $KOFIN_UNSLOTH_ENV, then the checkout's .venv-unsloth."""
    if configured is not None:
        return configured
    if os.environ.get(UNSLOTH_ENV_VAR):
        return Path(os.environ[UNSLOTH_ENV_VAR]).resolve()
    return Path(__file__).resolve().parents[1] / ".venv-unsloth"


def has_unsloth(env: Path) -> bool:
    return (env / "bin" / "python").exists() and any((env / "lib").glob("python3*/site-packages/unsloth/__init__.py"))


def choose_backend(requested: str, *, merge_adapter: bool = False, env: Path | None = None) -> str:
    import torch

    cuda = torch.cuda.is_available()
    env = unsloth_env(env)
    if requested == "unsloth" and not cuda:
        raise DpoInputError(
            "backend 'unsloth' needs a CUDA GPU (unsloth refuses to import without one); use backend: trl or auto"
        )
    if requested == "unsloth" and not has_unsloth(env):
        raise DpoInputError(
            f"backend 'unsloth': no unsloth env at {env}; create it with `make unsloth-env` (pinned in "
            f"training/unsloth-requirements.txt), point unsloth_env or ${UNSLOTH_ENV_VAR} at one, or use backend: trl"
        )
    if requested == "unsloth" and merge_adapter:
        raise DpoInputError(
            "backend unsloth supports adapter_mode: stack; use backend: trl (or auto) for adapter_mode: merge"
        )
    if requested == "auto":
        return "unsloth" if cuda and has_unsloth(env) and not merge_adapter else "trl"
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


# ---------------------------------------------------------------- the training job


def trainer_args(cfg: DpoConfig, out: Path, *, progress: bool, cuda: bool) -> dict[str, Any]:
    """TRL DPOConfig arguments, as JSON: the same in kofin's env (TRL 1.16) and unsloth's (TRL 1.15)."""
    t = cfg.training
    return dict(
        output_dir=str(out / "trainer"),
        beta=t.beta,
        loss_type=t.loss_type,
        label_smoothing=t.label_smoothing,
        max_length=t.max_length,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        seed=t.seed,
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
    )


def write_job(
    cfg: DpoConfig,
    out: Path,
    backend: str,
    base: Path,
    sft_run: Path | None,
    rows: list[dict[str, Any]],
    tokenizer_dir: Path,
    *,
    progress: bool,
    cuda: bool,
) -> Path:
    """The job file dpo_recipe.py runs: everything it needs, nothing it would have to import kofin for."""
    pairs = out / PAIRS_COPY
    atomic_write_text(
        pairs,
        "".join(
            json.dumps({k: r[k] for k in ("prompt", "chosen", "rejected")}, ensure_ascii=False) + "\n" for r in rows
        ),
    )
    job = {
        "backend": backend,
        "base_model": str(base),
        "sft_run": str(sft_run) if sft_run else None,
        "adapter_mode": cfg.adapter_mode,
        "load_in_4bit": cfg.load_in_4bit,
        "precision": cfg.training.precision,
        "max_length": cfg.training.max_length,
        "gradient_checkpointing": cfg.training.gradient_checkpointing,
        "lora": {
            "r": cfg.lora.r,
            "alpha": cfg.lora.alpha,
            "dropout": cfg.lora.dropout,
            "target_modules": list(cfg.lora.target_modules),
        },
        "tokenizer": str(tokenizer_dir),
        "pairs": str(pairs),
        "output_dir": str(out),
        "progress": progress,
        "trainer_args": trainer_args(cfg, out, progress=progress, cuda=cuda),
    }
    atomic_write_json(out / recipe.JOB_FILE, job)
    return out / recipe.JOB_FILE


def run_in_unsloth_env(cfg: DpoConfig, job_path: Path, out: Path, *, progress: bool) -> dict[str, Any]:
    """dpo_recipe.py in the unsloth env, logged to logs/dpo.log; its trainer_log.json comes back."""
    from kofin.offline import OFFLINE_ENV
    from kofin.training.launch import LaunchError, LaunchPlan, run_logged

    env = unsloth_env(cfg.unsloth_env)
    plan = LaunchPlan(
        [str(env / "bin" / "python"), str(RECIPE), str(job_path)],
        {
            **OFFLINE_ENV,
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_DATASETS_CACHE": str(out / "hf_cache"),
        },
    )
    log = out / "logs" / "dpo.log"
    try:
        run_logged(
            plan,
            log,
            echo=progress,
            tool=f"unsloth DPO ({env})",
            hint="Nothing was kept: {cause}, then run the same command again.",
        )
    except LaunchError as err:
        said = [
            line[len(recipe.ERROR_PREFIX) :]
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.startswith(recipe.ERROR_PREFIX)
        ]
        raise DpoInputError(said[-1] + f" (log: {log})") if said else err from None
    finally:
        shutil.rmtree(out / "hf_cache", ignore_errors=True)
    return json.loads((out / recipe.LOG_FILE).read_text(encoding="utf-8"))


def run_in_process(job_path: Path) -> dict[str, Any]:
    try:
        result = recipe.train(json.loads(job_path.read_text(encoding="utf-8")))
    except recipe.RecipeError as err:
        raise DpoInputError(str(err)) from None
    atomic_write_json(job_path.with_name(recipe.LOG_FILE), result)
    return result


# ---------------------------------------------------------------- run


def main(cfg: DpoConfig, *, quiet: bool = False) -> Path:
    """Train DPO on top of the SFT run and write the run directory. `quiet`: no progress bars."""
    progress = not quiet
    sft_run = resolve_sft_run(cfg)
    base = resolve_base_model(cfg)
    rows, files = load_pairs(cfg)
    backend = choose_backend(
        cfg.backend, merge_adapter=sft_run is not None and cfg.adapter_mode == "merge", env=cfg.unsloth_env
    )
    if (
        backend == "unsloth"
        and sft_run is not None
        and cfg.base_model is not None
        and cfg.base_model != _adapter_base(sft_run)
    ):
        raise DpoInputError(
            f"base_model: backend unsloth loads the base the SFT adapter names ({_adapter_base(sft_run)}); "
            "remove base_model or use backend: trl"
        )
    import torch
    from transformers import AutoTokenizer

    tokenizer_dir = sft_run or base
    check_prompt_lengths(rows, AutoTokenizer.from_pretrained(str(tokenizer_dir)), cfg.training.max_length)
    inputs: dict[str, Path | None] = {"base_model": base, "sft_run": sft_run}
    inputs.update({f"preferences_{i}": p for i, p in enumerate(files)})
    _quiet_library_noise(progress)
    with open_run("dpo", cfg, inputs=inputs) as run:
        job = write_job(
            cfg,
            run.path,
            backend,
            base,
            sft_run,
            rows,
            tokenizer_dir,
            progress=progress,
            cuda=torch.cuda.is_available(),
        )
        result = (
            run_in_unsloth_env(cfg, job, run.path, progress=progress) if backend == "unsloth" else run_in_process(job)
        )
        shutil.rmtree(run.path / "trainer", ignore_errors=True)
        merged_first = [sft_run] if sft_run is not None and cfg.adapter_mode == "merge" else []
        run.metrics.update(summarize(result, run.path, backend, len(rows), lineage_record(base, merged_first)))
        # Beside the adapter, not only in the manifest: a merged-mode adapter applies to base + SFT.
        atomic_write_json(run.path / keys.ADAPTER_BASE_FILE, run.metrics[keys.ADAPTER_BASE])
        # The finished run lives at final_dir: the job names the files there, so it reruns as written.
        atomic_write_text(job, job.read_text(encoding="utf-8").replace(str(run.path), str(run.final_dir)))
    return run.final_dir


def _adapter_base(sft_run: Path) -> Path:
    return Path(json.loads((sft_run / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"])


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


def summarize(result: dict[str, Any], out: Path, backend: str, pairs: int, lineage: dict[str, Any]) -> dict[str, Any]:
    """Per-step rewards to metrics.jsonl; first/last margins and accuracies for the manifest."""
    history = result["log_history"]
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for record in history:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    steps = [h for h in history if "rewards/margins" in h]
    final: dict[str, Any] = next((h for h in reversed(history) if "train_runtime" in h), {})
    pick = lambda h, k: round(h[k], 6) if h and k in h else None  # noqa: E731
    first, last = (steps[0], steps[-1]) if steps else ({}, {})
    runtime = final.get("train_runtime")
    return {
        keys.BACKEND: backend,
        keys.PAIRS: pairs,
        keys.STEPS: len(steps),
        keys.LOSS_FIRST: pick(first, "loss"),
        keys.LOSS_LAST: pick(last, "loss"),
        keys.REWARD_MARGIN_FIRST: pick(first, "rewards/margins"),
        keys.REWARD_MARGIN_LAST: pick(last, "rewards/margins"),
        keys.REWARD_ACCURACY_LAST: pick(last, "rewards/accuracies"),
        keys.TRAIN_RUNTIME_S: runtime,
        # TRL's num_tokens counts prompt + both answers of every pair seen, padding excluded.
        keys.TOKENS_PER_S: round(last["num_tokens"] / runtime, 1) if "num_tokens" in last and runtime else None,
        keys.ADAPTER_ELEMENTS_CHANGED: round(result["adapter_elements_changed"], 6),
        # The env that trained (the unsloth env's own pins differ from kofin's, recorded in versions).
        "trained_with": result.get("versions"),
        # What the adapter applies to, for the merge and eval stages (kofin.rundir.adapter_lineage).
        keys.ADAPTER_BASE: lineage,
    }
