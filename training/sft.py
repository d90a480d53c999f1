"""Domain SFT: kofin writes the axolotl YAML, axolotl trains.

Run as:
    kofin sft --config configs/sft/tiny.yaml                       # embedded tiny model, CPU, < 1 min
    kofin sft --config configs/sft/eeve_qlora_r256_8xh100.yaml --dry-run

The recipe reads top to bottom: resolve inputs -> check the data against the base tokenizer ->
estimate memory -> write and validate the axolotl YAML -> launch -> collect metrics. Every check
that can fail runs before the launch, so a bad config never books a GPU. A killed run leaves
`<output_dir>.partial/` with axolotl's checkpoints; the same command resumes from the newest
complete one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kofin import manifest_keys as keys
from kofin.errors import KofinError
from kofin.rundir import (
    PARTIAL_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    config_digest,
    open_run,
    require_complete,
    sha256_file,
)
from kofin.training import checkpoints
from kofin.training.axolotl_yaml import AXOLOTL_YAML, build_axolotl_config, chat_template_text, deepspeed_config
from kofin.training.launch import LaunchPlan, plan_launch, run_logged, validate_with_axolotl
from kofin.training.memory import LlamaShape, MemoryEstimate, estimate_memory
from kofin.training.sft_config import SftConfig

DATA_FILES = {"chat": "sft/train.jsonl", "completion": "sft/raw_text.jsonl"}
MAX_LISTED = 10


class SftInputError(KofinError):
    """A base model or dataset that cannot be trained on as configured."""


@dataclass
class SftPlan:
    base_model: Path
    datasets: list[tuple[Path, str]]
    shape: LlamaShape
    memory: MemoryEstimate
    axolotl: dict[str, Any]
    launch: LaunchPlan
    warnings: list[str] = field(default_factory=list)  # dry run: inputs this machine does not hold

    def describe(self) -> str:
        m = self.memory
        lines = [
            f"base model:        {self.base_model}",
            *(f"dataset ({kind}):   {path}" for path, kind in self.datasets),
            f"trainable params:  {m.trainable_params:,} of {m.total_params:,} "
            f"({100 * m.trainable_params / m.total_params:.2f}%)",
            "memory estimate per GPU (no weights loaded):",
            m.table(),
            "launch (kofin also sets its offline and telemetry-off variables; see launch.sh in the run):",
            "  " + self.launch.shell(full=False),
        ]
        return "\n".join(lines)


# ---------------------------------------------------------------- inputs


def resolve_base_model(cfg: SftConfig, *, dry_run: bool) -> tuple[Path, LlamaShape]:
    if cfg.base_model is None:
        from kofin.tiny import default_tiny_model

        path = default_tiny_model()
        return path, LlamaShape.from_config(path)
    path = cfg.base_model
    if (path / "config.json").is_file():
        return path, LlamaShape.from_config(path)
    if dry_run and cfg.base_model_shape is not None:
        return path, LlamaShape(**cfg.base_model_shape.model_dump())
    hint = " (set base_model_shape to dry-run without it)" if dry_run else ""
    raise SftInputError(f"base_model: {path} has no config.json; point it at a local Hugging Face model folder{hint}")


def resolve_datasets(cfg: SftConfig) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for i, ds in enumerate(cfg.datasets):
        where = f"datasets.{i}.path"
        if ds.path.is_dir():
            require_complete(ds.path, "data", what=where)
            path = ds.path / DATA_FILES[ds.type]
            if not path.is_file():
                raise SftInputError(
                    f"{where}: the data run {ds.path} has no {DATA_FILES[ds.type]}; rebuild it with that part enabled"
                )
        elif ds.path.is_file():
            path = ds.path
        else:
            raise SftInputError(
                f"{where}: {ds.path} does not exist. Build data with "
                "`kofin data build --config configs/data/tiny.yaml` "
                "or point it at a JSONL file."
            )
        out.append((path, ds.type))
    return out


def check_rows(cfg: SftConfig, datasets: list[tuple[Path, str]], base_model: Path) -> dict[str, Any]:
    """Schema and token lengths of every row, with the base model's own tokenizer and chat template."""
    from kofin.data_ko.formats import read_records
    from kofin.data_ko.validate import check_sft_row, load_tokenizer, token_lengths

    # The rows are measured with the template axolotl will train with (written into its YAML);
    # raw text alone (continued pretraining) needs none.
    template = chat_template_text(cfg)
    needs_own = cfg.chat_template == "tokenizer_default" and any(kind == "chat" for _, kind in datasets)
    tokenizer = load_tokenizer(base_model, key="base_model", needs_template=needs_own)
    if template is not None:
        tokenizer.chat_template = template
    seq_len = cfg.training.sequence_len
    problems: list[str] = []
    stats: dict[str, Any] = {}
    for path, kind in datasets:
        rows = list(read_records(path))
        if not rows:
            problems.append(f"{path}: no rows")
            continue
        schema = []
        for where, row in rows:
            if kind == "chat":
                schema += [f"{where}  {p}" for p in check_sft_row(row)]
            elif not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
                schema.append(f'{where}  text: expected a non-empty string (completion rows are {{"text": ...}})')
        if schema:
            problems += schema
            continue  # lengths of malformed rows mean nothing; the next dataset is still checked
        lengths = token_lengths([r for _, r in rows], "sft" if kind == "chat" else "raw", tokenizer)
        stats[str(path)] = {"rows": len(rows), "tokens": int(sum(lengths)), "max_tokens": max(lengths)}
        if kind == "chat" and cfg.training.too_long == "error":
            long = [(where, n) for (where, _), n in zip(rows, lengths, strict=True) if n > seq_len]
            problems += [f"{where}  {n} tokens > training.sequence_len {seq_len}" for where, n in long]
            if long:
                problems.append(
                    f"fix: raise training.sequence_len to {max(n for _, n in long)} or more, rebuild the data with "
                    f"validate.max_seq_len={seq_len}, or set training.too_long=drop"
                )
    if problems:
        shown = problems[: MAX_LISTED * 2]
        if len(problems) > len(shown):
            fixes = [p for p in problems[len(shown) :] if p.startswith("fix:")]
            shown += [f"... and {len(problems) - len(shown) - len(fixes)} more"] + fixes
        raise SftInputError("the training data cannot be used as configured:\n  " + "\n  ".join(shown))
    return stats


# ---------------------------------------------------------------- plan


def plan(
    cfg: SftConfig,
    work_dir: Path,
    base_model: Path,
    shape: LlamaShape,
    datasets: list[tuple[Path, str]],
    *,
    dry_run: bool = False,
) -> SftPlan:
    method, train, launch = cfg.parsed_method, cfg.training, cfg.launch
    memory = estimate_memory(
        shape,
        method="qlora" if method.quantize_4bit else "lora",
        r=cfg.lora.r,
        targets=cfg.lora.target_modules,
        seq_len=train.sequence_len,
        micro_batch=train.micro_batch_size,
        gradient_checkpointing=train.gradient_checkpointing,
        world_size=launch.world_size,
        sharding=_sharding(launch.distributed),
        dora=method.dora,
        lora_dropout=cfg.lora.dropout,
    )
    ds_json = work_dir / "deepspeed.json" if launch.distributed.startswith("deepspeed") else None
    axolotl = build_axolotl_config(
        cfg,
        base_model=base_model,
        datasets=datasets,
        output_dir=work_dir,
        deepspeed_json=ds_json,
        architecture=_architecture(base_model),
    )
    # A dry run on a laptop plans for the recipe's GPUs when it asks for GPU-only features.
    cuda = _cuda_available() or (dry_run and (train.precision != "fp32" or train.flash_attention))
    launch_plan = plan_launch(launch, work_dir / AXOLOTL_YAML, cuda=cuda, run_dir=work_dir)
    return SftPlan(base_model, datasets, shape, memory, axolotl, launch_plan)


def _sharding(distributed: str) -> str:
    return {"deepspeed_zero1": "zero1", "deepspeed_zero2": "zero2", "deepspeed_zero3": "zero3", "fsdp": "fsdp"}.get(
        distributed, "ddp"
    )


def _architecture(base_model: Path) -> str:
    try:
        return json.loads((base_model / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    except (OSError, KeyError, IndexError, json.JSONDecodeError):
        return "LlamaForCausalLM"  # dry run of a model that is not on this machine: EEVE is a Llama


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def write_axolotl_files(p: SftPlan, cfg: SftConfig, work_dir: Path) -> Path:
    yaml_path = work_dir / AXOLOTL_YAML
    header = "# Written by `kofin sft`; run it alone with `axolotl train axolotl.yaml` in the axolotl env.\n"
    atomic_write_text(yaml_path, header + yaml.safe_dump(p.axolotl, allow_unicode=True, sort_keys=False))
    if cfg.launch.distributed.startswith("deepspeed"):
        atomic_write_json(work_dir / "deepspeed.json", deepspeed_config(int(cfg.launch.distributed[-1])))
    atomic_write_text(
        work_dir / "launch.sh", "#!/bin/sh\n# The command kofin ran.\nexec env " + p.launch.shell() + "\n"
    )
    return yaml_path


# ---------------------------------------------------------------- run


def check_with_axolotl(p: SftPlan, cfg: SftConfig) -> list[str] | None:
    """axolotl's schema check of the plan's YAML, written to a scratch file: before any run folder exists."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kofin-sft-check-") as tmp:
        yaml_path = Path(tmp) / AXOLOTL_YAML
        yaml_path.write_text(yaml.safe_dump(p.axolotl, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return validate_with_axolotl(cfg.launch, yaml_path)


def dry_run(cfg: SftConfig) -> tuple[SftPlan, list[str] | None]:
    """The plan and what axolotl's check says of it; loads no weights, launches nothing."""
    base_model, shape = resolve_base_model(cfg, dry_run=True)
    # The data may live only on the cluster: show where the run will read it, without opening it.
    datasets: list[tuple[Path, str]] = [
        (d.path if d.path.suffix == ".jsonl" else d.path / DATA_FILES[d.type], d.type) for d in cfg.datasets
    ]
    p = plan(cfg, Path(str(cfg.output_dir) + PARTIAL_SUFFIX), base_model, shape, datasets, dry_run=True)
    p.warnings = missing_inputs(cfg, base_model)
    return p, check_with_axolotl(p, cfg)


def missing_inputs(cfg: SftConfig, base_model: Path) -> list[str]:
    """Inputs a dry run planned without: fine on a laptop, fatal on the cluster, so said either way."""
    out = []
    if not (base_model / "config.json").is_file():
        what = "does not exist" if not base_model.exists() else "has no config.json"
        out.append(f"base_model {base_model} {what} on this machine (planned from base_model_shape); the run needs it")
    for i, ds in enumerate(cfg.datasets):
        if not ds.path.exists():
            out.append(
                f"datasets.{i}.path {ds.path} does not exist on this machine; the run needs it "
                "(build it with `kofin data build`)"
            )
    return out


def resume_digest(cfg: SftConfig, datasets: list[tuple[Path, str]]) -> str:
    """What must be unchanged to continue an interrupted attempt: the training settings and the
    data itself (axolotl reuses its tokenized copy by config alone). Price, currency and tidying
    do not change the training, so editing them keeps the checkpoints."""
    settings = cfg.model_dump(mode="json", exclude={"keep_checkpoints": True, "launch": {"gpu_hour_price", "currency"}})
    settings["data_sha256"] = [sha256_file(path) for path, _ in datasets]
    return config_digest(settings)


def main(cfg: SftConfig, *, quiet: bool = False) -> Path:
    """Train through axolotl and write the run directory. `quiet`: axolotl's output goes to
    logs/train.log only."""
    echo = not quiet
    say = _phases(echo)
    final = cfg.output_dir
    work = Path(str(final) + PARTIAL_SUFFIX)
    base_model, shape = resolve_base_model(cfg, dry_run=False)
    datasets = resolve_datasets(cfg)
    say(f"checking {len(datasets)} dataset(s) against the base tokenizer and chat template")
    stats = check_rows(cfg, datasets, base_model)
    rows = sum(s["rows"] for s in stats.values())
    longest = max((s["max_tokens"] for s in stats.values()), default=0)
    say(
        f"{rows:,} rows, {sum(s['tokens'] for s in stats.values()):,} tokens, longest {longest:,} "
        f"(training.sequence_len {cfg.training.sequence_len})"
    )
    p = plan(cfg, work, base_model, shape, datasets)
    say("validating the axolotl YAML with axolotl's own schema (~10-20 s: axolotl imports)")
    missing = check_with_axolotl(p, cfg)
    if missing:
        raise SftInputError(
            "the axolotl env lacks what this config needs: "
            + "; ".join(missing)
            + ". Install it into the env (e.g. .venv-axolotl/bin/pip install flash-attn deepspeed) "
            "or use a container image that has it."
        )
    if cfg.launch.node_rank > 0:
        return run_worker_node(p, cfg, echo=echo)
    digest = resume_digest(cfg, datasets)
    resume = checkpoints.same_config(work, digest)
    if work.exists() and not resume:
        print(f"kofin sft: {work} holds an attempt of another config or other data; starting afresh", flush=True)
    inputs: dict[str, Path | None] = {"base_model": p.base_model}
    inputs.update({f"dataset_{i}": path for i, (path, _) in enumerate(p.datasets)})
    with open_run("sft", cfg, inputs=inputs, resume=resume) as run:
        state = checkpoints.start_attempt(run.path, digest)
        write_axolotl_files(p, cfg, run.path)
        resumed_from = checkpoints.drop_incomplete(run.path)
        if resumed_from is not None:
            print(f"kofin sft: resuming from {resumed_from.name} in {run.path}", flush=True)
        world = cfg.launch.world_size
        say(
            f"launching {world} rank{'s' if world > 1 else ''} through {cfg.launch.launcher}; "
            f"axolotl's full log: {run.path / 'logs' / 'train.log'}"
        )
        from kofin.training.console import AxolotlConsole

        wall = run_logged(p.launch, run.path / "logs" / "train.log", echo=echo, view=AxolotlConsole())
        state = checkpoints.finish_attempt(run.path, state, wall, resumed_from)
        run.metrics.update(collect_metrics(run.path, cfg, p, state, stats))
        if not (run.path / "adapter_model.safetensors").is_file():
            raise SftInputError(
                f"axolotl finished but wrote no adapter_model.safetensors in {run.path}; see logs/train.log"
            )
        checkpoints.tidy(run.path, keep_checkpoints=cfg.keep_checkpoints)
        # The finished run lives at `final`: make its recipe point there, so it reruns as written.
        for name in (AXOLOTL_YAML, "launch.sh", "deepspeed.json"):
            if (run.path / name).is_file():
                text = (run.path / name).read_text(encoding="utf-8")
                atomic_write_text(run.path / name, text.replace(str(run.path), str(final)))
    return final


def _phases(echo: bool):
    """Phase lines on the console as they happen (nothing with --quiet)."""

    def say(text: str) -> None:
        if echo:
            print(f"kofin sft: {text}", flush=True)

    return say


def run_worker_node(p: SftPlan, cfg: SftConfig, *, echo: bool) -> Path:
    """Nodes other than rank 0 only start their processes. The run directory (on a filesystem every
    node shares) is rank 0's to create, resume, finish and tidy; two writers would race."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=f"kofin-sft-node{cfg.launch.node_rank}-"))
    yaml_path = Path(p.launch.argv[-1])  # the YAML rank 0 writes into the shared run folder
    for _ in range(600):
        if yaml_path.is_file():
            break
        time.sleep(1)  # rank 0 checks the data and writes the YAML first
    else:
        raise SftInputError(
            f"{yaml_path} did not appear within 10 minutes; is output_dir on a filesystem shared with node 0?"
        )
    run_logged(p.launch, scratch / "train.log", echo=echo)
    print(
        f"kofin sft: node {cfg.launch.node_rank} finished; node 0 writes {cfg.output_dir} "
        f"(log: {scratch / 'train.log'})"
    )
    return cfg.output_dir


def collect_metrics(
    run_dir: Path, cfg: SftConfig, p: SftPlan, state: dict[str, Any], stats: dict[str, Any]
) -> dict[str, Any]:
    """Per-step log to metrics.jsonl; the summary (loss, tokens/s, GPU-hours, cost) for the manifest."""
    history = checkpoints.log_history(run_dir)
    steps = [h for h in history if "loss" in h]
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for h in history:
            fh.write(json.dumps(h, ensure_ascii=False) + "\n")
    tokens = max((h.get("tokens/total", 0) for h in steps), default=0)
    # Throughput of the attempt that finished: tokens since the step it resumed from, over its runtime.
    last = state["attempts"][-1]
    resumed = last.get("resumed_from_step") or 0
    # The count at the last logged step up to the checkpoint (logging_steps need not divide save_steps).
    before = max((h.get("tokens/total", 0) for h in steps if h["step"] <= resumed), default=0)
    runtime = last.get("train_runtime_s") or 0.0
    tokens_run = tokens - before
    launch = cfg.launch
    gpus = launch.world_size if _cuda_available() or launch.container else 0
    wall = sum(a["wall_s"] for a in state["attempts"])
    gpu_hours = gpus * wall / 3600
    # axolotl logs device memory from rank 0 only; ranks of a DDP job hold the same model and batch size.
    peak = max((h.get("memory/max_allocated (GiB)", 0.0) for h in history), default=0.0)
    return {
        keys.METHOD: cfg.method,
        keys.STEPS: max((h["step"] for h in steps), default=0),
        keys.LOSS_FIRST: steps[0]["loss"] if steps else None,
        keys.LOSS_LAST: steps[-1]["loss"] if steps else None,
        "train_loss": last.get("train_loss"),
        keys.TOKENS_TOTAL: tokens,
        keys.TRAIN_RUNTIME_S: round(runtime, 3),
        keys.TOKENS_PER_S: round(tokens_run / runtime, 1) if runtime else None,
        keys.TOKENS_PER_S_PER_GPU: round(tokens_run / runtime / launch.world_size, 1) if runtime else None,
        keys.PEAK_GPU_MEMORY_GIB_RANK0: peak if gpus else None,
        keys.MEMORY_ESTIMATE_GIB_PER_GPU: round(p.memory.total / 1024**3, 2),
        keys.TRAINABLE_PARAMS: p.memory.trainable_params,
        keys.WORLD_SIZE: launch.world_size,
        "attempts": len(state["attempts"]),
        "resumed_from_step": state["attempts"][-1].get("resumed_from_step"),
        "launch_wall_s": round(wall, 2),
        keys.GPU_HOURS: round(gpu_hours, 4),
        keys.COST: {
            "amount": round(gpu_hours * launch.gpu_hour_price, 2),
            "currency": launch.currency,
            "gpu_hour_price": launch.gpu_hour_price,
        },
        "data": stats,
    }
