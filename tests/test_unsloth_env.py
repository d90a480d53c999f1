"""The pinned unsloth env (`make unsloth-env`): it builds and pip-checks on CPU, holds the lock's
versions, and kofin's DPO job reaches `import unsloth` there and stops with a clear no-CUDA error."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from kofin.config import load_config
from kofin.training import dpo, dpo_recipe
from kofin.training.dpo_config import DpoConfig

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "training" / "unsloth-requirements.txt"


@pytest.fixture(scope="module")
def unsloth_env() -> Path:
    env = dpo.unsloth_env()
    if not dpo.has_unsloth(env):
        pytest.fail(f"no unsloth env at {env}: run `make unsloth-env` (make test creates it)")
    return env


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_what_unsloth_supports_and_leaves_torch_to_the_platform():
    pins = lock_pins()
    assert pins["unsloth"] == pins["unsloth-zoo"] == "2026.10.9"
    # unsloth 2026.10.9 requires trl<=1.15.0 and transformers<=5.17.0: below the app env's trl>=1.16.
    assert pins["trl"] == "1.15.0" and pins["transformers"] == "5.17.0"
    assert "torch" not in pins  # installed first, for the platform (UNSLOTH_TORCH_SPEC in the Makefile)


def test_env_pip_checks_clean_and_holds_the_lock(unsloth_env):
    check = subprocess.run(
        [str(unsloth_env / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True, timeout=300
    )
    assert check.returncode == 0, check.stdout + check.stderr
    freeze = subprocess.run(
        [str(unsloth_env / "bin" / "python"), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    installed = {}
    for line in freeze.stdout.splitlines():
        name, _, version = line.partition("==")
        installed[name.lower().replace("_", "-")] = version
    wrong = {
        name: (version, installed.get(name)) for name, version in lock_pins().items() if installed.get(name) != version
    }
    assert not wrong, wrong
    assert installed["torch"].startswith("2.")  # whatever the platform's build, below the lock's torch<2.15


def job_for(tmp_path: Path, sft_run: Path, data_run: Path) -> Path:
    """The job kofin writes for backend unsloth, for the tiny SFT run."""
    cfg = load_config(
        DpoConfig,
        ROOT / "configs" / "dpo" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'dpo'}",
            f"sft_run={sft_run}",
            f"preferences=[{data_run}]",
            "training.max_steps=2",
            "backend=unsloth",
            "load_in_4bit=true",
            "training.precision=bf16",
        ],
    )
    rows, _ = dpo.load_pairs(cfg)
    out = tmp_path / "dpo.partial"
    out.mkdir()
    return dpo.write_job(
        cfg, out, "unsloth", dpo.resolve_base_model(cfg), sft_run, rows, sft_run, progress=False, cuda=True
    )


@pytest.mark.slow
def test_recipe_runs_in_the_env_up_to_import_unsloth(tmp_path, unsloth_env, axolotl_sft_run, tiny_data_run):
    """The real job file, the real env: it parses the job and imports torch there, then stops
    before unsloth (which raises without an accelerator) with one clear line."""
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: tests/test_dpo.py::test_unsloth_dpo_on_gpu trains through the env")
    job = job_for(tmp_path, axolotl_sft_run, tiny_data_run)
    assert json.loads(job.read_text())["trainer_args"]["bf16"] is True
    proc = subprocess.run(
        [str(unsloth_env / "bin" / "python"), str(dpo.RECIPE), str(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == dpo_recipe.EXIT_NO_CUDA, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if line.startswith(dpo_recipe.ERROR_PREFIX)]
    assert len(said) == 1 and "backend unsloth needs a CUDA GPU" in said[0] and str(unsloth_env) in said[0]
    assert "Traceback" not in proc.stderr
    assert not (job.parent / dpo_recipe.LOG_FILE).exists()


@pytest.mark.slow
def test_kofin_dpo_runs_the_unsloth_backend_as_a_subprocess(
    tmp_path, monkeypatch, unsloth_env, axolotl_sft_run, tiny_data_run
):
    """kofin dpo with the unsloth backend forced past its CUDA check: the job goes to the env through
    the launcher, the env's own error comes back as kofin's, and no run is marked complete."""
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the GPU test trains through the env")
    monkeypatch.setattr(dpo, "choose_backend", lambda *a, **k: "unsloth")
    cfg = load_config(
        DpoConfig,
        ROOT / "configs" / "dpo" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'dpo'}",
            f"sft_run={axolotl_sft_run}",
            f"preferences=[{tiny_data_run}]",
            "training.max_steps=2",
            "backend=unsloth",
        ],
    )
    with pytest.raises(dpo.DpoInputError, match=r"backend unsloth needs a CUDA GPU.*\(log: .*logs/dpo\.log\)"):
        dpo.main(cfg, quiet=True)
    partial = tmp_path / "dpo.partial"
    assert (partial / "dpo_job.json").is_file() and (partial / "logs" / "dpo.log").is_file()
    assert not (tmp_path / "dpo").exists() and not (partial / "hf_cache").exists()
