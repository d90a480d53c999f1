"""Run directories: how stages hand work to each other.

A stage writes everything into `<output_dir>.partial/`, then writes `config.yaml`,
`manifest.json` and, last, `COMPLETE`, and renames the folder into place. A reader only ever
accepts a folder that holds `COMPLETE`, so a killed or failed run is never mistaken for input.
The `.partial` folder survives a crash on purpose: training stages resume from checkpoints in it.

    with open_run("sft", cfg, inputs={"base_model": cfg.base_model}) as run:
        train(..., out=run.path)
        run.metrics["tokens_per_s"] = 1234.5
    # run.final_dir now holds the complete run
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from pydantic import BaseModel

from kofin import __version__
from kofin import manifest_keys as keys
from kofin.errors import KofinError

COMPLETE = "COMPLETE"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
PARTIAL_SUFFIX = ".partial"

# Libraries whose versions decide whether a run can be reproduced. Read from package metadata,
# so recording them imports nothing.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "peft",
    "trl",
    "accelerate",
    "bitsandbytes",
    "datasets",
    "mergekit",
    "unsloth",
    "axolotl",
    "deepspeed",
    "gradio",
    "langchain-core",
    "faiss-cpu",
    "kiwipiepy",
    "sentence-transformers",
    "lm-eval",
    "pydantic",
    "numpy",
)


class RunDirError(KofinError):
    """A run directory that cannot be used as input."""


# ---------------------------------------------------------------- hashing + atomic writes


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Digest of a folder: every file's relative path and content, in sorted order.

    A complete run directory is summarised by its manifest's output hashes instead, so a
    20 GB model run is not re-read every time a later stage names it as input.
    """
    path = Path(path)
    if (path / COMPLETE).exists() and (path / MANIFEST).exists():
        outputs = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("outputs", {})
        return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def sha256_input(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        return sha256_tree(path)
    return sha256_file(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def config_digest(config: dict[str, Any]) -> str:
    """Hash of a resolved config without where it is written: same work, same digest."""
    clean = {k: v for k, v in config.items() if k != "output_dir"}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------- environment facts


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "kofin": __version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> dict[str, Any] | None:
    """The kofin checkout's commit and whether it had uncommitted changes, when it is a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its finished children (e.g. axolotl), in MiB."""
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 / (1024 * 1024) if sys.platform == "darwin" else 1 / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return {"self": round(own, 1), "children": round(children, 1)}


def peak_gpu_mb() -> dict[str, float] | None:
    """Peak CUDA memory per device for work done in this process; None without a GPU."""
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is None or not torch.cuda.is_available():
        return None
    return {f"cuda:{i}": round(torch.cuda.max_memory_allocated(i) / 2**20, 1) for i in range(torch.cuda.device_count())}


# ---------------------------------------------------------------- writing a run


@dataclass
class Run:
    """A run being written. Write artifacts under `path`; add numbers to `metrics`."""

    stage: str
    config: dict[str, Any]
    final_dir: Path
    inputs: dict[str, Path]
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def finish(self) -> Path:
        wall = time.time() - self.started
        atomic_write_text(self.path / CONFIG, yaml.safe_dump(self.config, allow_unicode=True, sort_keys=False))
        outputs = {
            str(p.relative_to(self.path)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, COMPLETE)
        }
        manifest: dict[str, Any] = {
            "stage": self.stage,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": self.config,
            "config_sha256": config_digest(self.config),
            "inputs": {name: {"path": str(p), "sha256": sha256_input(p)} for name, p in sorted(self.inputs.items())},
            "outputs": outputs,
            "versions": library_versions(),
            "git": git_commit(),
            keys.HOST: {"platform": platform.platform(), "cpus": os.cpu_count()},
            keys.WALL_TIME_S: round(wall, 3),
            keys.PEAK_RSS_MB: peak_rss_mb(),
            keys.PEAK_GPU_MB: peak_gpu_mb(),
            keys.METRICS: self.metrics,
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        atomic_write_text(self.path / COMPLETE, manifest["created"] + "\n")  # last, by design
        _swap_into_place(self.path, self.final_dir)
        return self.final_dir


def _is_replaceable(path: Path) -> bool:
    """An earlier kofin run (complete or not) or an empty folder; never a user's own folder."""
    if not path.is_dir():
        return False
    return (path / MANIFEST).is_file() or not any(path.iterdir())


def _swap_into_place(work: Path, final: Path) -> None:
    if final.exists():
        # Keep the old run until the new one is in place; a crash in between loses neither.
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{int(time.time())}")
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)


class open_run:  # noqa: N801 - used as a context manager, reads like a function
    """Context manager for a stage's run directory.

    `resume=True` keeps what an interrupted attempt left in `<output_dir>.partial` (training
    checkpoints); otherwise that folder is cleared so stale files never reach the manifest.
    On an exception the partial folder is left for inspection and the error propagates.
    """

    def __init__(
        self,
        stage: str,
        cfg: BaseModel | dict[str, Any],
        output_dir: Path | None = None,
        inputs: dict[str, Path | None] | None = None,
        *,
        resume: bool = False,
    ):
        config = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else dict(cfg)
        final = Path(output_dir if output_dir is not None else config["output_dir"]).resolve()
        work = final.with_name(final.name + PARTIAL_SUFFIX)
        self.run = Run(
            stage=stage,
            config=config,
            final_dir=final,
            inputs={k: Path(v) for k, v in (inputs or {}).items() if v is not None},
            path=work,
        )
        self.resume = resume

    def __enter__(self) -> Run:
        final = self.run.final_dir
        self._lock = _lock_output(final)
        if final.exists() and not _is_replaceable(final):
            raise RunDirError(
                f"output_dir {final} already exists and is not a kofin run directory (no {MANIFEST}); "
                "kofin only replaces its own runs. Choose an empty or new output_dir."
            )
        work = self.run.path
        if work.exists() and not self.resume:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return self.run

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.run.finish()
        finally:
            self._lock.close()  # releases the lock; the empty lock file stays, harmlessly


def _lock_output(final: Path) -> IO[str]:
    """Hold an exclusive lock on `final` for this run, or say who holds it.

    Two runs writing one output directory (a second terminal, a pipeline and a hand-run stage,
    a retry while the first attempt still trains) would resume from, and delete, each other's
    checkpoints. The OS releases the lock when its holder dies, so a killed run never leaves a
    stale one.
    """
    import fcntl

    final.parent.mkdir(parents=True, exist_ok=True)
    handle = open(final.with_name(f".{final.name}.lock"), "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirError(
            f"output_dir {final} is being written by another kofin run ({holder}). Wait for it to "
            "finish, stop it, or choose another output_dir."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        f"pid {os.getpid()} on {platform.node()}, since {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
    )
    handle.flush()
    return handle


# ---------------------------------------------------------------- reading a run


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file() and (Path(path) / MANIFEST).is_file()


def require_complete(path: Path, stage: str | tuple[str, ...] | None = None, *, what: str = "input") -> dict[str, Any]:
    """The manifest of a complete run directory, or a RunDirError that says what to do. `stage`: the
    stage (or any of the stages) that must have written it."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{what} {path}: no such run directory. Run the stage that writes it first.")
    if not path.is_dir():
        raise RunDirError(f"{what} {path}: expected a run directory, found a file.")
    if not (path / COMPLETE).is_file():
        partial = (
            " (a .partial folder beside it means a run is still going or was killed)"
            if Path(str(path) + PARTIAL_SUFFIX).exists()
            else ""
        )
        raise RunDirError(
            f"{what} {path} is not a complete run: it has no {COMPLETE} marker, so the stage that "
            f"writes it was interrupted, failed, or is still running{partial}. Re-run that stage, "
            f"or point {what} at a complete run directory."
        )
    try:
        manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirError(f"{what} {path}: {MANIFEST} is unreadable ({err}); re-run the stage.") from None
    wanted = (stage,) if isinstance(stage, str) else stage
    if wanted is not None and manifest.get("stage") not in wanted:
        expected = " or ".join(f"'{s}'" for s in wanted)
        raise RunDirError(f"{what} {path} was written by stage '{manifest.get('stage')}', expected a {expected} run.")
    return manifest


def iter_runs(root: Path) -> Iterator[Path]:
    """Complete run directories directly under `root`."""
    for p in sorted(Path(root).iterdir()):
        if p.is_dir() and is_complete(p):
            yield p


# ---------------------------------------------------------------- adapter lineage


@dataclass(frozen=True)
class AdapterLineage:
    """What a training run's LoRA adapter applies to: a base model folder, with these SFT runs'
    adapters merged into it first (a DPO run with `adapter_mode: merge`), in order."""

    base_model: Path | None  # None: neither the manifest nor adapter_config.json names one
    merged_first: tuple[Path, ...] = ()


def lineage_record(base_model: Path, merged_first: list[Path]) -> dict[str, Any]:
    """The manifest entry (`metrics.adapter_base`) a training stage writes for its adapter."""
    return {keys.LINEAGE_BASE_MODEL: str(base_model), keys.LINEAGE_MERGED_FIRST: [str(p) for p in merged_first]}


def adapter_lineage(run: Path, manifest: dict[str, Any] | None = None) -> AdapterLineage:
    """The one reader of adapter lineage (eval and merge both call it): the run's manifest record,
    else the base its adapter_config.json names (a `kofin sft` run records none)."""
    run = Path(run)
    if manifest is None and (run / MANIFEST).is_file():
        manifest = json.loads((run / MANIFEST).read_text(encoding="utf-8"))
    recorded = ((manifest or {}).get(keys.METRICS) or {}).get(keys.ADAPTER_BASE) or {}
    base = recorded.get(keys.LINEAGE_BASE_MODEL)
    if not base and (run / "adapter_config.json").is_file():
        base = json.loads((run / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    return AdapterLineage(
        Path(base) if base else None, tuple(Path(p) for p in recorded.get(keys.LINEAGE_MERGED_FIRST, []))
    )
