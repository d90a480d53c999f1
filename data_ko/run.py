"""The data stage: build SFT and DPO rows, validate them, and write one run directory.

Run as:
    kofin data build --config configs/data/tiny.yaml [key.path=value ...]

Output (`output_dir`):

    sft/train.jsonl  sft/eval.jsonl  [sft/raw_text.jsonl]   when sft is configured
    dpo/train.jsonl  dpo/eval.jsonl                          when dpo is configured
    report.json  config.yaml  manifest.json  COMPLETE

Everything is built and validated in memory before the first file is written, and the files go
into `<output_dir>.partial/`, which is renamed into place only once complete: a failed build
leaves the previous run directory as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kofin.data_ko.build_dpo import build_dpo_rows
from kofin.data_ko.build_sft import build_sft_rows
from kofin.data_ko.config import DataConfig, DocumentSource
from kofin.data_ko.corpus import bundled_kb_dir
from kofin.data_ko.validate import load_tokenizer, source_group, validate_raw_text, validate_rows
from kofin.rundir import open_run


def write_jsonl(path: Path, rows: list[dict[str, Any]], *, progress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in tqdm(
            rows,
            desc=f"write {path.parent.name}/{path.name}",
            unit="row",
            disable=None if progress else True,
            leave=False,
        ):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _document_path(source: DocumentSource) -> Path:
    return source.path if source.path is not None else bundled_kb_dir()


def stage_inputs(cfg: DataConfig, tokenizer_path: Path | None) -> dict[str, Path | None]:
    """Every file the build reads, named by its config key, for the manifest's input hashes."""
    inputs: dict[str, Path | None] = {"tokenizer": tokenizer_path}
    if cfg.sft is not None:
        for i, source in enumerate(cfg.sft.documents):
            inputs[f"sft.documents.{i}"] = _document_path(source)
        for i, inst in enumerate(cfg.sft.instructions):
            inputs[f"sft.instructions.{i}"] = inst.path
    if cfg.dpo is not None:
        for i, pref in enumerate(cfg.dpo.sources):
            inputs[f"dpo.sources.{i}"] = pref.path
        if cfg.dpo.from_documents:
            for i, source in enumerate(cfg.dpo.documents):
                inputs[f"dpo.documents.{i}"] = _document_path(source)
    return inputs


def _check_inputs_exist(cfg: DataConfig, inputs: dict[str, Path | None]) -> None:
    from kofin.config import ConfigError, config_location

    problems = []
    for name, path in inputs.items():
        if path is not None and not path.exists():
            key = "validate.tokenizer" if name == "tokenizer" else f"{name}.path"
            problems.append(
                f"{config_location(cfg, key)}  {key}: {path} does not exist; fix the path "
                "(relative paths are read from the config file's folder)"
            )
    if problems:
        raise ConfigError(cfg._origin[0] if cfg._origin else "config", problems)


def _tokenizer_path(cfg: DataConfig) -> Path:
    if cfg.validate.tokenizer is not None:
        return cfg.validate.tokenizer
    from kofin.tiny import default_tiny_model

    return default_tiny_model()


def build(
    cfg: DataConfig, tokenizer_path: Path, *, progress: bool = True
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """All output rows by relative file name, and the report; nothing is written."""
    tokenizer = load_tokenizer(tokenizer_path)
    files: dict[str, list[dict]] = {}
    report: dict[str, Any] = {"tokenizer": str(tokenizer_path)}
    if cfg.sft is not None:
        sft = build_sft_rows(cfg.sft, progress=progress)
        checked = validate_rows(sft.rows, "sft", cfg.validate, tokenizer)
        files["sft/train.jsonl"], files["sft/eval.jsonl"] = checked.train, checked.eval
        report["sft"] = {"built": sft.stats} | checked.report
        if cfg.sft.raw_text:
            # Only passages of train documents: eval documents must stay unseen in pretraining too.
            train_groups = {source_group(r["source"]) for r in checked.train}
            raw = [r for r in sft.raw_text if source_group(r["source"]) in train_groups]
            files["sft/raw_text.jsonl"], report["sft_raw_text"] = validate_raw_text(raw, cfg.validate, tokenizer)
    if cfg.dpo is not None:
        rows, stats = build_dpo_rows(cfg.dpo, progress=progress)
        checked = validate_rows(rows, "dpo", cfg.validate, tokenizer)
        files["dpo/train.jsonl"], files["dpo/eval.jsonl"] = checked.train, checked.eval
        report["dpo"] = {"built": stats} | checked.report
    return files, report


def summary_metrics(files: dict[str, list[dict]], report: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"rows": {name: len(rows) for name, rows in files.items()}}
    for part in ("sft", "dpo", "sft_raw_text"):
        if part not in report:
            continue
        section = report[part]
        metrics[part] = {
            "pii_masked": section["pii"].get("by_kind", {}),
            "duplicates_removed": {
                k: section["duplicates"][k] for k in ("exact", "near") if k in section["duplicates"]
            },
            "tokens": {k: section["tokens"].get(k) for k in ("mean", "p50", "p95", "max", "over_max_seq_len")},
        }
        if "leakage" in section:
            metrics[part]["too_long_dropped"] = section["tokens"].get("dropped", 0)
            metrics[part]["leakage_removed"] = section["leakage"]["removed_from_eval"]
    return metrics


def main(cfg: DataConfig, *, quiet: bool = False) -> Path:
    """Build what `cfg` enables and write the run directory; returns its path. `quiet`: no progress bars."""
    progress = not quiet
    tokenizer_path = _tokenizer_path(cfg)
    inputs = stage_inputs(cfg, tokenizer_path)
    _check_inputs_exist(cfg, inputs)  # before the lock and the .partial folder: nothing to clean up
    with open_run("data", cfg, inputs=inputs) as run:
        # Built inside the run so its wall time and peak memory are the build's. A failure here
        # leaves only `<output_dir>.partial/`; the previous run directory is never touched.
        files, report = build(cfg, tokenizer_path, progress=progress)
        for name, rows in files.items():
            write_jsonl(run.path / name, rows, progress=progress)
        (run.path / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        run.metrics.update(summary_metrics(files, report))
    return cfg.output_dir
