"""Resume bookkeeping for training runs that live in `<output_dir>.partial/`.

axolotl (HF Trainer) writes `checkpoint-<step>/` folders and, with
`auto_resume_from_checkpoints`, restarts from the highest-numbered one. The Trainer does not
save atomically: a kill during a save leaves a checkpoint without `trainer_state.json` (written
last), which auto-resume would still pick. kofin removes such a checkpoint before relaunching,
and records each attempt in `attempts.json` so wall time and GPU-hours add up across resumes.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from kofin.rundir import atomic_write_json

ATTEMPTS = "attempts.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")
SCRATCH = ("prepared", "hf_cache")  # derived from the inputs; rebuilt if ever needed


def list_checkpoints(run_dir: Path) -> list[Path]:
    found = [
        (int(m.group(1)), p) for p in run_dir.glob("checkpoint-*") if p.is_dir() and (m := _CHECKPOINT.search(p.name))
    ]
    return [p for _, p in sorted(found)]


def same_config(work_dir: Path, digest: str) -> bool:
    """Whether `work_dir` holds an interrupted attempt of this very config (then resume it)."""
    try:
        state = json.loads((work_dir / ATTEMPTS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return state.get("config_sha256") == digest


def start_attempt(run_dir: Path, digest: str) -> dict[str, Any]:
    """Record a new attempt. An earlier attempt that never finished was killed: its wall time
    (until its log last grew) still counts towards GPU-hours, since the GPUs were held."""
    path = run_dir / ATTEMPTS
    state: dict[str, Any] = (
        json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"config_sha256": digest, "attempts": []}
    )
    log = run_dir / "logs" / "train.log"
    for attempt in state["attempts"]:
        if attempt.get("wall_s") is None:
            ended = log.stat().st_mtime if log.is_file() else attempt["started"]
            attempt.update(wall_s=round(max(ended - attempt["started"], 0.0), 3), killed=True)
    state["attempts"].append({"started": time.time(), "wall_s": None})
    atomic_write_json(path, state)
    return state


def drop_incomplete(run_dir: Path) -> Path | None:
    """Delete checkpoints a kill cut short; return the checkpoint training will resume from."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        if (ckpt / "trainer_state.json").is_file():
            return ckpt
        shutil.rmtree(ckpt)
    return None


def _step(ckpt: Path | None) -> int | None:
    if ckpt is None:
        return None
    m = _CHECKPOINT.search(ckpt.name)
    if m is None:  # drop_incomplete only returns list_checkpoints' checkpoint-<step> folders
        raise ValueError(f"{ckpt} is not a checkpoint-<step> folder")
    return int(m.group(1))


def final_record(log_path: Path) -> dict[str, float]:
    """The Trainer's end-of-training record (train_runtime, train_loss ...) from the console log.

    It is logged after the last checkpoint is saved, so no trainer_state.json holds it; the
    Trainer prints it as a Python dict with values formatted as strings.
    """
    text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    start = text.rfind("{'train_runtime'")
    if start < 0:
        return {}
    try:
        record = ast.literal_eval(text[start : text.index("}", start) + 1])
    except (ValueError, SyntaxError):
        return {}
    out = {}
    for key, value in record.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def finish_attempt(run_dir: Path, state: dict[str, Any], wall_s: float, resumed_from: Path | None) -> dict[str, Any]:
    final = final_record(run_dir / "logs" / "train.log")
    state["attempts"][-1].update(
        wall_s=round(wall_s, 3),
        train_runtime_s=final.get("train_runtime"),
        train_loss=final.get("train_loss"),
        resumed_from_step=_step(resumed_from),
    )
    atomic_write_json(run_dir / ATTEMPTS, state)
    return state


def log_history(run_dir: Path) -> list[dict[str, Any]]:
    """The Trainer's log (loss, lr, tokens, memory per step) from the newest complete checkpoint.

    The Trainer saves a final checkpoint at the last step with a steps save strategy, so the
    newest checkpoint's trainer_state.json covers the whole run, resumed parts included.
    """
    for ckpt in reversed(list_checkpoints(run_dir)):
        state_file = ckpt / "trainer_state.json"
        if state_file.is_file():
            return json.loads(state_file.read_text(encoding="utf-8")).get("log_history", [])
    return []


def tidy(run_dir: Path, *, keep_checkpoints: bool) -> None:
    """Drop what only served training (prepared data, caches; optimizer checkpoints unless kept)."""
    found = list_checkpoints(run_dir)
    if found:
        shutil.copy2(found[-1] / "trainer_state.json", run_dir / "trainer_state.json")
    for name in SCRATCH:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    if not keep_checkpoints:
        for ckpt in found:
            shutil.rmtree(ckpt)
