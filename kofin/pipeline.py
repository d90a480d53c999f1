"""The pipeline runner: the stages of one YAML, in order, skipping those already done.

Run as:
    kofin pipeline --config configs/pipeline/tiny.yaml [--dry-run] [--force sft] [sft.training.max_steps=5]

A pipeline names stage configs; it does not wire stages together, because the stage configs
already do (the SFT config names the data run, the DPO config the SFT run ...). The runner adds
what running them by hand lacks: one command, the order, and a skip rule. A stage is skipped
when its output directory holds a complete run whose config digest is the one this pipeline
would run, and whose every input still has the hash the run recorded. A changed input (a
re-trained upstream stage, an edited data file) therefore re-runs everything that depends on
it, and an upstream re-run that produced identical outputs re-runs nothing downstream.

Stages never import each other; the runner, which is no stage, imports each one's `main(cfg)`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kofin.cli import COMMANDS, load_target
from kofin.config import ConfigError, KofinModel, ResolvedPath, _is_path_field, load_config
from kofin.errors import KofinError
from kofin.rundir import COMPLETE, config_digest, is_complete, require_complete, sha256_input

StageName = Literal["tiny", "data", "sft", "dpo", "merge", "ingest", "eval"]

# stage -> its main(cfg). Config models are the ones `kofin <stage> --config` validates (kofin.cli.COMMANDS).
STAGE_MAINS: dict[str, str] = {
    "tiny": "kofin.tiny:build_tiny_model",
    "data": "kofin.data_ko.run:main",
    "sft": "kofin.training.sft:main",
    "dpo": "kofin.training.dpo:main",
    "merge": "kofin.merge.run:main",
    "ingest": "kofin.serve.ingest:main",
    "eval": "kofin.eval.run:main",
}
# Keyword arguments that silence a stage's own progress output under `--quiet`.
QUIET_KWARGS: dict[str, dict[str, bool]] = {
    "data": {"progress": False},
    "sft": {"echo": False},
    "dpo": {"progress": False},
    "eval": {"progress": False},
}


class PipelineStep(KofinModel):
    stage: StageName = Field(description="Which kofin stage runs: tiny, data, sft, dpo, merge, ingest or eval.")
    config: ResolvedPath = Field(
        description="The stage's own YAML (configs/<stage>/<name>.yaml), relative to this file."
    )
    name: str | None = Field(None, description="Name used in output, --force and overrides; default: the stage.")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="Config overrides for this step: {key.path: value}, applied after the stage YAML. A path given as a plain value is relative to the pipeline file.",
    )

    @property
    def label(self) -> str:
        return self.name or self.stage


class PipelineConfig(KofinModel):
    stages: list[PipelineStep] = Field(min_length=1, description="Steps, run in this order.")

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        seen: set[str] = set()
        for step in self.stages:
            if step.label in seen:
                raise ValueError(f"two steps are named '{step.label}': give one a distinct `name:`")
            seen.add(step.label)
        return self


@dataclass
class Planned:
    step: PipelineStep
    cfg: Any  # the stage's validated config
    output_dir: Path
    forced: bool  # --force: runs even when up to date


def step_config(step: PipelineStep, base_dir: Path, extra: list[str]) -> Any:
    """The stage config of one step: its YAML < the pipeline's `set:` < command-line overrides."""
    model = load_target(COMMANDS[step.stage].config)
    overrides = []
    for key, value in step.set.items():
        keys = tuple(key.split("."))
        if isinstance(value, str) and _is_path_field(model, keys) and not Path(value).is_absolute():
            value = str((base_dir / value).resolve())  # `set:` paths are relative to the pipeline file
        overrides.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
    return load_config(model, step.config, overrides + extra)


def why_run(stage: str, cfg: Any, output_dir: Path) -> str | None:
    """None when `output_dir` already holds this exact work; else the reason it must run."""
    if not is_complete(output_dir):
        return "no complete run yet" if not output_dir.exists() else f"{output_dir.name} has no {COMPLETE}"
    manifest = require_complete(output_dir)
    if manifest.get("stage") != stage:
        return f"{output_dir} holds a '{manifest.get('stage')}' run"
    if manifest.get("config_sha256") != config_digest(cfg.model_dump(mode="json")):
        return "config changed"
    for name, recorded in manifest.get("inputs", {}).items():
        path = Path(recorded["path"])
        if not path.exists():
            return f"input {name} ({path}) is gone"
        if sha256_input(path) != recorded["sha256"]:
            return f"input {name} changed ({path})"
    return None


def plan(cfg: PipelineConfig, source: Path, overrides: Sequence[str] = (), force: Sequence[str] = ()) -> list[Planned]:
    """Validate every step's config before anything runs, so a typo in step 5 costs no training."""
    labels = [s.label for s in cfg.stages]
    for name in force:
        if name != "all" and name not in labels:
            raise KofinError(f"--force {name}: no such step; steps are {', '.join(labels)} (or 'all')")
    per_step: dict[str, list[str]] = {label: [] for label in labels}
    for item in overrides:
        head, _, rest = item.partition(".")
        if head not in per_step or not rest:
            raise KofinError(
                f"override '{item}': start it with a step name ({', '.join(labels)}), e.g. sft.training.max_steps=5"
            )
        per_step[head].append(rest)
    problems: list[str] = []
    steps: list[tuple[PipelineStep, Any]] = []
    for step in cfg.stages:
        try:
            steps.append((step, step_config(step, source.resolve().parent, per_step[step.label])))
        except ConfigError as err:
            problems.append(f"step '{step.label}' ({step.config}): " + "; ".join(err.problems))
    if problems:
        raise ConfigError(str(source), problems)
    # Whether a step is up to date is decided when its turn comes: the steps before it may change its inputs.
    return [
        Planned(step, stage_cfg, Path(stage_cfg.output_dir), "all" in force or step.label in force)
        for step, stage_cfg in steps
    ]


def main(
    cfg: PipelineConfig,
    source: Path,
    *,
    overrides: Sequence[str] = (),
    force: Sequence[str] = (),
    dry_run: bool = False,
    quiet: bool = False,
    echo: Callable[..., Any] = print,
) -> list[dict[str, Any]]:
    """Run the pipeline; returns one record per step (name, stage, output_dir, status, seconds)."""
    steps = plan(cfg, source, list(overrides), list(force))
    records = []
    rerun: dict[Path, str] = {}  # output dirs of steps that run (or would), by step name
    for n, p in enumerate(steps, 1):
        head = f"[{n}/{len(steps)}] {p.step.label} ({p.step.stage})"
        reason = "forced" if p.forced else why_run(p.step.stage, p.cfg, p.output_dir)
        upstream = [rerun[d] for d in _input_dirs(p.output_dir) if d in rerun]
        if reason is None and dry_run and upstream:
            echo(f"{head}: up to date now; runs again if {', '.join(upstream)} changes its outputs")
            records.append(_record(p, "may run", 0.0, f"after {', '.join(upstream)}"))
            rerun[p.output_dir.resolve()] = p.step.label
            continue
        if reason is None:
            echo(f"{head}: up to date, skipped ({p.output_dir})")
            records.append(_record(p, "skipped", 0.0))
            continue
        rerun[p.output_dir.resolve()] = p.step.label
        if dry_run:
            echo(f"{head}: would run ({reason}) -> {p.output_dir}")
            records.append(_record(p, "would run", 0.0, reason))
            continue
        echo(f"{head}: running ({reason}) -> {p.output_dir}")
        started = time.perf_counter()
        try:
            load_target(STAGE_MAINS[p.step.stage])(p.cfg, **(QUIET_KWARGS.get(p.step.stage, {}) if quiet else {}))
        except KofinError as err:
            alone = (
                f"kofin tiny build {p.output_dir}"
                if p.step.stage == "tiny"
                else (f"kofin {'data build' if p.step.stage == 'data' else p.step.stage} --config {p.step.config}")
            )
            if p.step.set:
                alone += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in p.step.set.items())
            raise KofinError(
                f"step '{p.step.label}' failed: {err}\n  the steps before it are complete; fix this and run "
                f"the pipeline again (finished steps are skipped), or run the step alone: {alone}"
            ) from err
        seconds = time.perf_counter() - started
        echo(f"{head}: done in {seconds:.1f} s")
        records.append(_record(p, "ran", seconds, reason))
    return records


def _input_dirs(output_dir: Path) -> list[Path]:
    """The input paths the complete run in `output_dir` recorded (none if there is no run)."""
    if not is_complete(output_dir):
        return []
    return [Path(i["path"]).resolve() for i in require_complete(output_dir).get("inputs", {}).values()]


def _record(p: Planned, status: str, seconds: float, reason: str | None = None) -> dict[str, Any]:
    return {
        "name": p.step.label,
        "stage": p.step.stage,
        "output_dir": str(p.output_dir),
        "status": status,
        "reason": reason,
        "seconds": round(seconds, 1),
    }
