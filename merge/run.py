"""Merge the tuned model with an instruct model through mergekit, checked before and after.

Run as:
    kofin merge --config configs/merge/tiny.yaml          # tiny models, CPU, seconds
    kofin merge --config configs/merge/eeve_slerp.yaml    # DPO-tuned EEVE x EEVE-Instruct

Reads top to bottom: resolve the tuned run, its base and the other models -> compare their
configs and tokenizers (no tensor read) -> step 1: fold the adapters into the 16-bit base ->
step 2: write the mergekit YAML and run it with mergekit's API, lazily, out of core -> check the
merged tensors, load and generate, perplexity probe of the merged model and its parents.

The run directory holds `tuned/` (step 1), `merged/` (the model to serve), `mergekit.yaml` and
`reproduce.sh` (`mergekit-yaml` on it rebuilds the same weights), `checks.json`, and the manifest
with per-phase peak RSS next to the models' sizes.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import yaml

from kofin.merge import checks
from kofin.merge.adapter import TunedSource, merge_adapters, resolve_tuned
from kofin.merge.checks import ModelRef
from kofin.merge.config import TASK_VECTOR_METHODS, MergeConfig
from kofin.merge.memory import phase
from kofin.merge.recipe import (
    MERGEKIT_YAML,
    REPRODUCE,
    mergekit_config,
    reproduce_command,
    run_mergekit,
    shard_params,
    validate,
)
from kofin.rundir import open_run

TUNED_DIR, MERGED_DIR, CHECKS_FILE = "tuned", "merged", "checks.json"


def resolve_others(cfg: MergeConfig) -> list[Path]:
    from kofin.tiny import default_tiny_model

    # MergeModel's validator guarantees exactly one of path and tiny_seed.
    return [m.path if m.path is not None else default_tiny_model(seed=m.tiny_seed or 0) for m in cfg.models]


def model_refs(cfg: MergeConfig, src: TunedSource, others: list[Path]) -> tuple[ModelRef, list[ModelRef]]:
    # The tuned model is the base plus adapters: the base's config, the run's own tokenizer.
    tuned = ModelRef("tuned_run", src.base_model, src.tokenizer_dir, shown=f"{src.run}, adapter on {src.base_model}")
    refs = [ModelRef(f"models.{i}", p) for i, p in enumerate(others)]
    if cfg.method in TASK_VECTOR_METHODS:
        refs.append(ModelRef("base_model", src.base_model))
    return tuned, refs


def model_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


# ---------------------------------------------------------------- the stage


def main(cfg: MergeConfig, *, quiet: bool = False) -> Path:
    """Merge, check and write the run directory. `quiet` is accepted for the one stage signature:
    the merge prints nothing while it works (its phases are timed in the manifest)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor bars for a few models say nothing; phases are timed
    src = resolve_tuned(cfg.tuned_run, cfg.base_model)
    others = resolve_others(cfg)
    tuned_ref, other_refs = model_refs(cfg, src, others)
    compat = checks.check_compatible(tuned_ref, other_refs, tokenizer_source=cfg.tokenizer_source)
    passages = checks.probe_passages(cfg.checks.probe_file)

    inputs: dict[str, Path | None] = {"tuned_run": src.run, "base_model": src.base_model}
    inputs.update({f"models_{i}": p for i, p in enumerate(others)})
    phases: dict[str, Any] = {}
    with open_run("merge", cfg, inputs=inputs) as run:
        tuned, merged = run.path / TUNED_DIR, run.path / MERGED_DIR
        # The tuned model keeps its run's tokenizer, so its chat template is known before step 1.
        template = checks.tokenizer_facts(tuned_ref)["chat_template"]
        as_run = mergekit_config(cfg, tuned=tuned, base=src.base_model, others=others, chat_template=template)
        merge_config, options = validate(as_run, cfg)  # a recipe mergekit rejects fails before any weights move
        # The saved YAML names the run's final location; mergekit runs now on the same files in .partial.
        as_saved = mergekit_config(
            cfg, tuned=run.final_dir / TUNED_DIR, base=src.base_model, others=others, chat_template=template
        )
        yaml_text = yaml.safe_dump(as_saved, allow_unicode=True, sort_keys=False)
        (run.path / MERGEKIT_YAML).write_text(yaml_text, encoding="utf-8")
        command = reproduce_command(cfg, run.final_dir / MERGEKIT_YAML, "OUT").replace(
            " OUT ", ' "${1:-merged-again}" '
        )
        (run.path / REPRODUCE).write_text(
            "#!/bin/sh\n# Rebuilds merged/ from mergekit.yaml, in kofin's app env: sh reproduce.sh [OUT]\n"
            "# Bit for bit for deterministic methods; dare_* masks depend on mergekit's task order.\n"
            f"{command}\n",
            encoding="utf-8",
        )

        shard_bytes = shard_params(cfg.options.out_shard_size) * (4 if cfg.dtype == "float32" else 2)
        with phase(phases, "adapter_merge"):
            step1 = merge_adapters(src, tuned, dtype=cfg.dtype, max_shard_size=shard_bytes)

        import mergekit.merge  # noqa: F401  (its import is not the merge's memory)

        with phase(phases, "mergekit"):
            run_mergekit(merge_config, options, yaml_text, merged, cfg.method)
        card = merged / "README.md"
        if card.exists():  # mergekit's card lists the paths it read; name the final ones
            card.write_text(
                card.read_text(encoding="utf-8").replace(str(run.path), str(run.final_dir)), encoding="utf-8"
            )

        with phase(phases, "checks"):
            report = post_checks(cfg, tuned, others, merged, passages)
        checks.write_json(run.path / CHECKS_FILE, report)
        sizes = {
            "tuned": model_bytes(tuned),
            **{f"models.{i}": model_bytes(p) for i, p in enumerate(others)},
            "merged": model_bytes(merged),
        }
        if cfg.method in TASK_VECTOR_METHODS:
            sizes["base_model"] = model_bytes(src.base_model)
        run.metrics.update(
            {
                "method": cfg.method,
                "adapters_merged": step1["adapters"],
                "parameters": step1["parameters"],
                "compatibility": compat,
                "phases": phases,
                "model_bytes": sizes,
                "perplexity": {k: v["perplexity"] for k, v in report["perplexity"].items()},
                "generation": report["generation"]["text"],
                "reproduce": reproduce_command(cfg, run.final_dir / MERGEKIT_YAML),
            }
        )
    return run.final_dir


def post_checks(cfg: MergeConfig, tuned: Path, others: list[Path], merged: Path, passages: list[str]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    expected: dict[str, tuple[int, ...]] = {}
    for parent in [tuned, *others]:
        expected.update(checks.tensor_shapes(parent))
    report: dict[str, Any] = {
        "tensors": checks.check_tensors(merged, expected, vocab_may_change=cfg.tokenizer_source is not None),
        "finite": checks.check_finite(merged),
        "probe": {"file": str(cfg.checks.probe_file or checks.DEFAULT_PROBE), "passages": len(passages)},
        "perplexity": {},
    }
    device, dtype = checks.runtime(cfg.checks.device, cfg.checks.dtype, cfg.dtype)
    report["runtime"] = {"device": device, "dtype": dtype}
    # One model in memory at a time: the merged one first (it must load and generate), then each parent.
    for name, path in [("merged", merged), ("tuned", tuned), *[(f"models.{i}", p) for i, p in enumerate(others)]]:
        model, tokenizer = checks.load_causal_lm(path, device, dtype), AutoTokenizer.from_pretrained(str(path))
        if name == "merged":
            report["generation"] = checks.check_generates(
                model, tokenizer, cfg.checks.generate_prompt, cfg.checks.generate_tokens
            )
        report["perplexity"][name] = checks.perplexity(model, tokenizer, passages, cfg.checks.probe_max_tokens)
        del model
        gc.collect()
    return report
