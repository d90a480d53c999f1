"""SFT through real axolotl on the embedded tiny model (CPU): weights change, resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kofin.config import load_config
from kofin.rundir import require_complete
from kofin.training.sft import main
from kofin.training.sft_config import SftConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "sft" / "tiny.yaml"
RUN_FILES = {
    "COMPLETE",
    "manifest.json",
    "config.yaml",
    "axolotl.yaml",
    "launch.sh",
    "attempts.json",
    "metrics.jsonl",
    "trainer_state.json",
    "adapter_model.safetensors",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "logs/train.log",
}


def tiny_sft(out: Path, data_run: Path, *overrides: str) -> SftConfig:
    return load_config(
        SftConfig,
        TINY,
        [
            f"output_dir={out}",
            f"datasets.0.path={data_run}",
            "training.max_steps=6",
            "training.save_steps=3",
            "training.sequence_len=1024",
            *overrides,
        ],
    )


def check_trained(run: Path) -> dict:
    manifest = require_complete(run, "sft")
    files = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
    assert RUN_FILES <= files, RUN_FILES - files
    assert not any(f.startswith(("checkpoint-", "prepared/", "hf_cache/")) for f in files)  # training scratch is gone
    adapter = load_file(str(run / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in adapter.items() if "lora_B" in k}
    # PEFT starts every lora_B at zero: non-zero B means the optimizer changed the adapter.
    assert lora_b and all(v.abs().max() > 0 for v in lora_b.values())
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 6 and all(0 < x < 20 for x in losses)
    m = manifest["metrics"]
    assert m["steps"] == 6 and m["tokens_total"] > 0 and m["tokens_per_s"] > 0 and m["train_runtime_s"] > 0
    if not torch.cuda.is_available():
        assert m["gpu_hours"] == 0  # CPU processes are not GPU-hours
    assert manifest["inputs"]["base_model"]["sha256"] and manifest["inputs"]["dataset_0"]["sha256"]
    return manifest


def test_lora_sft_through_axolotl(tmp_path, tiny_data_run, axolotl_env, tiny_model):
    run = main(tiny_sft(tmp_path / "lora", tiny_data_run, "launch.launcher=accelerate"), quiet=True)
    manifest = check_trained(run)
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["base_model_name_or_path"] == str(tiny_model)
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    trained = sum(t.numel() for t in load_file(str(run / "adapter_model.safetensors")).values())
    assert manifest["metrics"]["trainable_params"] == trained == 81_920  # the estimate counts what PEFT trained
    assert "accelerate launch --num_processes 1" in (run / "launch.sh").read_text()


def test_qlora_rslora_with_continued_pretraining(tmp_path, tiny_data_run, axolotl_env):
    """4-bit NF4 base (bitsandbytes CPU backend) + rsLoRA, on chats and raw text together."""
    cfg = tiny_sft(
        tmp_path / "qlora",
        tiny_data_run,
        "method=qlora+rslora",
        f"datasets=[{{path: {tiny_data_run}, type: chat}}, {{path: {tiny_data_run}, type: completion}}]",
    )
    run = main(cfg, quiet=True)
    check_trained(run)
    assert json.loads((run / "adapter_config.json").read_text())["use_rslora"] is True
    log = (run / "logs" / "train.log").read_text()
    assert "prepare_model_for_kbit_training" in log  # axolotl really loaded the base in 4 bits
    y = (run / "axolotl.yaml").read_text()
    assert "type: completion" in y and "load_in_4bit: true" in y


def magnitude_moves(run: Path, base: Path) -> dict[str, float]:
    """How far each DoRA magnitude vector moved from where PEFT starts it (the row norms of the base
    weight, as B starts at zero), relative to those norms."""
    base_weights = load_file(str(base / "model.safetensors"))
    moves = {}
    for key, m in load_file(str(run / "adapter_model.safetensors")).items():
        if "lora_magnitude_vector" in key:
            module = key.removeprefix("base_model.model.").split(".lora_magnitude_vector")[0]
            start = torch.linalg.norm(base_weights[module + ".weight"].float(), dim=1)
            moves[module] = float(((m.float().flatten() - start).abs() / start).max())
    return moves


def test_dora_sft_and_its_magnitude_learning_rate(tmp_path, tiny_data_run, axolotl_env, tiny_model):
    run = main(tiny_sft(tmp_path / "dora", tiny_data_run, "method=dora"), quiet=True)
    check_trained(run)
    plain = magnitude_moves(run, tiny_model)
    assert plain and min(plain.values()) > 1e-4  # at learning_rate 1e-3 every magnitude vector trains
    # FinLoRA's fix: the magnitudes at a learning rate of their own (axolotl lr_groups). At 1e-12 they stay
    # where they started while A and B train as before: the group reaches the optimizer.
    frozen = main(
        tiny_sft(tmp_path / "maglr", tiny_data_run, "method=dora", "training.dora_magnitude_lr=1e-12"), quiet=True
    )
    check_trained(frozen)
    held = magnitude_moves(frozen, tiny_model)
    assert held.keys() == plain.keys() and max(held.values()) < 1e-6


def _launch_cli(cfg_path: Path, *overrides: str) -> subprocess.Popen:
    # A session of its own, as a batch scheduler gives a job: killing the group kills the job.
    return subprocess.Popen(
        [sys.executable, "-m", "kofin.cli", "sft", "--config", str(cfg_path), "--quiet", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_killed_run_resumes_from_last_complete_checkpoint(tmp_path, tiny_data_run, axolotl_env):
    out = tmp_path / "resume"
    partial = Path(str(out) + ".partial")
    overrides = [
        f"output_dir={out}",
        f"datasets.0.path={tiny_data_run}",
        "training.max_steps=12",
        "training.save_steps=4",
    ]
    first = _launch_cli(TINY, *overrides)
    deadline = time.time() + 240
    while not (partial / "checkpoint-4" / "trainer_state.json").exists():
        assert first.poll() is None, first.stdout.read().decode()
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # preemption: no clean-up handler runs
    first.wait()
    assert not out.exists() and partial.is_dir()
    # A kill during a save leaves a checkpoint without trainer_state.json; it must not be resumed from.
    (partial / "checkpoint-99").mkdir()
    (partial / "checkpoint-99" / "adapter_model.safetensors").write_bytes(b"torn")

    second = _launch_cli(TINY, *overrides)
    output = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, output
    manifest = require_complete(out, "sft")
    m = manifest["metrics"]
    assert m["attempts"] == 2 and m["resumed_from_step"] in (4, 8) and m["steps"] == 12
    attempts = json.loads((out / "attempts.json").read_text())["attempts"]
    assert attempts[0]["killed"] is True and attempts[0]["wall_s"] > 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert steps == list(range(1, 13))  # the resumed run carries the first attempt's log forward
    assert "kofin sft: resuming from checkpoint-" in output
    assert not partial.exists()


def test_ddp_two_processes_on_cpu(tmp_path, tiny_data_run, axolotl_env):
    """torchrun with 2 ranks: a real gloo process group, so 2x the samples per optimizer step."""
    if torch.cuda.is_available():
        pytest.skip("the CPU DDP path is for hosts without a GPU; on GPU hosts ranks need one GPU each")
    run = main(
        tiny_sft(
            tmp_path / "ddp",
            tiny_data_run,
            "launch.launcher=torchrun",
            "launch.gpus_per_node=2",
            "training.max_steps=4",
            "training.save_steps=4",
        ),
        quiet=True,
    )
    state = json.loads((run / "trainer_state.json").read_text())
    rows = json.loads((run / "manifest.json").read_text())["metrics"]["data"][
        str(tiny_data_run / "sft" / "train.jsonl")
    ]["rows"]
    # One process would need ceil(rows / 4) steps per epoch; two ranks of micro-batch 4 share it.
    assert state["log_history"][-1]["epoch"] == pytest.approx(4 / math.ceil(rows / (4 * 2)))
    assert state["log_history"][-1]["epoch"] > 1.8 * 4 / math.ceil(rows / 4)
    assert "ACCELERATE_USE_CPU=1" in (run / "launch.sh").read_text()
