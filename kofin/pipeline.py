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

A step may sweep config keys (`matrix:`, kofin/sweep.py): it then runs once per arm, each arm
its own step with its own run directory and the same skip rule, and an eval step may `compare:`
earlier steps, which adds every arm's run to its models (the LoRA-method study,
configs/pipeline/finlora_study_tiny.yaml).

Stages never import each other; the runner, which is no stage, imports each one's
`main(cfg, *, quiet=False)` through its record in kofin/stages.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kofin.config import ConfigError, KofinModel, ResolvedPath, _is_path_field, load_config
from kofin.errors import KofinError
from kofin.rundir import COMPLETE, config_digest, is_complete, require_complete, sha256_input
from kofin.stages import STAGES, stage_config_model, stage_main
from kofin.sweep import Arm, arms, check_matrix

# The eval config key a `compare:` step fills with the arms of the steps it compares.
EVAL_MODELS_KEY = "models"


class PipelineStep(KofinModel):
    stage: str = Field(description="Which kofin stage runs: " + ", ".join(STAGES) + " (kofin/stages.py).")
    config: ResolvedPath = Field(
        description="The stage's own YAML (configs/<stage>/<name>.yaml), relative to this file."
    )
    name: str | None = Field(None, description="Name used in output, --force and overrides; default: the stage.")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="Config overrides for this step: {key.path: value}, applied after the stage YAML. "
        "A path given as a plain value is relative to the pipeline file.",
    )
    matrix: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="A sweep: {key.path: [value, ...]} (keys as in `set:`); the step runs once per combination "
        "(an arm named <name>-<values>, e.g. sft-qlora-r8) into <output_dir>-<values>, each skipped when up to date.",
    )
    compare: list[str] = Field(
        default_factory=list,
        description="eval steps only: names of earlier steps whose runs (every arm of a matrix step) this eval adds "
        "to its models, each named by its arm, after the models of its own config (the base first).",
    )

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        return stage

    @model_validator(mode="after")
    def _compare_is_for_eval(self) -> PipelineStep:
        if self.compare and self.stage != "eval":
            raise ValueError(f"compare: is for eval steps (it fills the eval's models); this step is {self.stage}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.stage


class PipelineConfig(KofinModel):
    stages: list[PipelineStep] = Field(min_length=1, description="Steps, run in this order.")

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        seen: set[str] = set()
        for step in self.stages:
            for arm in arms(step.label, step.matrix):
                if arm.label in seen:
                    raise ValueError(f"two steps are named '{arm.label}': give one a distinct `name:`")
                seen.add(arm.label)
            for earlier in step.compare:
                if earlier not in {s.label for s in self.stages[: self.stages.index(step)]}:
                    raise ValueError(f"step '{step.label}': compare: '{earlier}' is no earlier step")
        return self


@dataclass
class Planned:
    step: PipelineStep
    arm: Arm
    cfg: Any  # the stage's validated config
    output_dir: Path
    forced: bool  # --force: runs even when up to date

    @property
    def label(self) -> str:
        return self.arm.label


def _override(model: Any, base_dir: Path, key: str, value: Any) -> str:
    keys = tuple(key.split("."))
    if isinstance(value, str) and _is_path_field(model, keys) and not Path(value).is_absolute():
        value = str((base_dir / value).resolve())  # `set:` paths are relative to the pipeline file
    return f"{key}={json.dumps(value, ensure_ascii=False)}"


def step_config(
    step: PipelineStep, base_dir: Path, extra: list[str], arm: Arm | None = None, compared: Sequence[Planned] = ()
) -> Any:
    """The stage config of one step (one arm): its YAML < `set:` < the arm's values < command-line overrides.

    An arm's output_dir is the step's with the arm's suffix; a `compare:` step's models gain one
    model per compared run, named by its arm."""
    model = stage_config_model(step.stage)
    overrides = [_override(model, base_dir, k, v) for k, v in step.set.items()]
    if arm is not None:
        overrides += [_override(model, base_dir, k, v) for k, v in arm.values.items()]
    cfg = load_config(model, step.config, overrides + extra)
    if arm is not None and arm.suffix:
        overrides.append(f"output_dir={json.dumps(f'{cfg.output_dir}-{arm.suffix}', ensure_ascii=False)}")
        cfg = load_config(model, step.config, overrides + extra)
    if compared:
        own = cfg.model_dump(mode="json")[EVAL_MODELS_KEY]
        taken = {m["name"] for m in own}
        for p in compared:
            if p.label in taken:
                raise ConfigError(str(step.config), [f"models: '{p.label}' is in the eval config and a compared step"])
        models = own + [{"name": p.label, "path": str(p.output_dir)} for p in compared]
        cfg = load_config(model, step.config, [*overrides, f"{EVAL_MODELS_KEY}={json.dumps(models)}", *extra])
    return cfg


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
    """Validate every step's (every arm's) config before anything runs, so a typo in step 5 costs no training."""
    expanded = [(step, arm) for step in cfg.stages for arm in arms(step.label, step.matrix)]
    labels = [s.label for s in cfg.stages] + [a.label for _, a in expanded if a.suffix]
    for name in force:
        if name != "all" and name not in labels:
            raise KofinError(f"--force {name}: no such step; steps are {', '.join(labels)} (or 'all')")
    # STEP.key=value reaches every arm of STEP; ARM.key=value one arm.
    per_label: dict[str, list[str]] = {label: [] for label in labels}
    for item in overrides:
        head, _, rest = item.partition(".")
        if head not in per_label or not rest:
            raise KofinError(
                f"override '{item}': start it with a step name ({', '.join(labels)}), e.g. sft.training.max_steps=5"
            )
        per_label[head].append(rest)
    problems: list[str] = []
    for step in cfg.stages:
        problems += check_matrix(stage_config_model(step.stage), step.matrix, step.label)
    if problems:
        raise ConfigError(str(source), problems)
    base_dir = source.resolve().parent
    planned: list[Planned] = []
    by_step: dict[str, list[Planned]] = {}
    for step, arm in expanded:
        extra = per_label[step.label] + (per_label[arm.label] if arm.suffix else [])
        compared = [p for name in step.compare for p in by_step.get(name, [])]
        where = f"step '{arm.label}' ({step.config})"
        try:
            stage_cfg = step_config(step, base_dir, extra, arm, compared)
        except ConfigError as err:
            problems.append(f"{where}: " + "; ".join(err.problems))
            continue
        forced = "all" in force or step.label in force or arm.label in force
        p = Planned(step, arm, stage_cfg, Path(stage_cfg.output_dir), forced)
        planned.append(p)
        by_step.setdefault(step.label, []).append(p)
    if problems:
        raise ConfigError(str(source), problems)
    dirs: dict[Path, str] = {}
    for p in planned:
        other = dirs.setdefault(p.output_dir.resolve(), p.label)
        if other != p.label:
            problems.append(f"steps '{other}' and '{p.label}' both write {p.output_dir}: give one its own output_dir")
    if problems:
        raise ConfigError(str(source), problems)
    # Whether a step is up to date is decided when its turn comes: the steps before it may change its inputs.
    return planned


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
        head = f"[{n}/{len(steps)}] {p.label} ({p.step.stage})"
        reason = "forced" if p.forced else why_run(p.step.stage, p.cfg, p.output_dir)
        upstream = [rerun[d] for d in _input_dirs(p.output_dir) if d in rerun]
        if reason is None and dry_run and upstream:
            echo(f"{head}: up to date now; runs again if {', '.join(upstream)} changes its outputs")
            records.append(_record(p, "may run", 0.0, f"after {', '.join(upstream)}"))
            rerun[p.output_dir.resolve()] = p.label
            continue
        if reason is None:
            echo(f"{head}: up to date, skipped ({p.output_dir})")
            records.append(_record(p, "skipped", 0.0))
            continue
        rerun[p.output_dir.resolve()] = p.label
        if dry_run:
            echo(f"{head}: would run ({reason}) -> {p.output_dir}")
            records.append(_record(p, "would run", 0.0, reason))
            continue
        echo(f"{head}: running ({reason}) -> {p.output_dir}")
        started = time.perf_counter()
        try:
            stage_main(p.step.stage)(p.cfg, quiet=quiet)
        except KofinError as err:
            raise KofinError(
                f"step '{p.label}' failed: {err}\n  the steps before it are complete; fix this and run "
                f"the pipeline again (finished steps are skipped), or run the step alone: {run_alone(p)}"
            ) from err
        seconds = time.perf_counter() - started
        echo(f"{head}: done in {seconds:.1f} s")
        records.append(_record(p, "ran", seconds, reason))
    return records


def run_alone(p: Planned) -> str:
    """The command that runs one step (one arm) by hand, with the overrides the pipeline applies."""
    record = STAGES[p.step.stage]
    template = record.alone or f"kofin {record.name} --config {{config}}"
    command = template.format(config=p.step.config, output_dir=p.output_dir)
    settings = {**p.step.set, **p.arm.values}
    if p.arm.suffix:
        settings["output_dir"] = str(p.output_dir)
    if settings:
        command += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in settings.items())
    return command


def _input_dirs(output_dir: Path) -> list[Path]:
    """The input paths the complete run in `output_dir` recorded (none if there is no run)."""
    if not is_complete(output_dir):
        return []
    return [Path(i["path"]).resolve() for i in require_complete(output_dir).get("inputs", {}).values()]


def _record(p: Planned, status: str, seconds: float, reason: str | None = None) -> dict[str, Any]:
    return {
        "name": p.label,
        "stage": p.step.stage,
        "output_dir": str(p.output_dir),
        "status": status,
        "reason": reason,
        "arm": dict(p.arm.values),
        "seconds": round(seconds, 1),
    }
