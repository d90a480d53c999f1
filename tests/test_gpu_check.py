"""benchmarks/gpu_check.sh, the prepared H200 check: its CPU-checkable parts (arguments, models at toy
width, the bitsandbytes trim, the JSON it writes). The H200 run itself is owed (benchmarks/README.md)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check = load("gpu_check_py", ROOT / "benchmarks" / "gpu" / "check.py")
wheels = load("gpu_wheels_py", ROOT / "benchmarks" / "gpu" / "wheels.py")


def test_script_arguments():
    usage = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert usage.returncode == 2 and "gpu_check.sh prepare" in usage.stderr  # a command comes first
    usage = subprocess.run(["bash", str(SCRIPT), "run", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "gpu_check.sh run" in usage.stdout and "--no-install" in usage.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "run", "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
    empty = subprocess.run(
        ["bash", str(SCRIPT), "run", "--carry", "/nonexistent/carry"], capture_output=True, text=True
    )
    assert empty.returncode == 2 and "run 'bash benchmarks/gpu_check.sh prepare' first" in empty.stderr


def test_check_arguments(tmp_path, capsys):
    base = ["--tokenizer", str(tmp_path), "--pairs", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o.json")]
    args = check.parse_args(base)
    assert (args.layers, args.steps, args.seq_len, args.r, args.device) == ([2, 4], 3, 4096, 256, "cuda")
    assert check.parse_args([*base, "--toy"]).seq_len == 128  # toy width, toy length
    for bad, says in (
        (["--layers", "2"], "two or more different layer counts"),
        (["--skip", "sft,nope"], "unknown part"),
    ):
        with pytest.raises(SystemExit):
            check.parse_args([*base, *bad])
        assert says in capsys.readouterr().err


def test_extrapolation_is_a_line_in_layers():
    points = [{"layers": 2, "m": 10.0}, {"layers": 4, "m": 12.0}]
    assert check.extrapolate(points, "m") == pytest.approx(10.0 + 46 * 1.0)
    assert check.extrapolate([{"layers": 2, "m": None}, {"layers": 4, "m": 1.0}], "m") is None


def test_toy_model_has_the_asked_shape(tmp_path, tiny_model):
    out = check.build_model(check.TOY_WIDTH, 2, tmp_path / "toy", tiny_model)
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (64, 224, 2)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (4, 1, 8192)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out))
    shape = check.memory.LlamaShape.from_config(out)
    assert sum(p.numel() for p in model.parameters()) == shape.total_params()  # the estimate's arithmetic holds
    assert (out / "tokenizer.json").is_file()


def test_bitsandbytes_trim_keeps_cuda13_and_cpu(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = [
        "bitsandbytes/libbitsandbytes_cuda121.so",
        "bitsandbytes/libbitsandbytes_cuda126.so",
        "bitsandbytes/libbitsandbytes_cuda130.so",
        "bitsandbytes/libbitsandbytes_cpu.so",
    ]
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("bitsandbytes/__init__.py", "")
        for lib in libs:
            z.writestr(lib, b"\0" * 1000)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "stale\n")
    dropped = wheels.trim_native_libraries(wheel)
    assert sorted(dropped) == libs[:2]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert names == {"bitsandbytes/__init__.py", *libs[2:], "bitsandbytes-0.50.2.dist-info/RECORD"}
    assert "cuda130.so,sha256=" in record and "cuda121" not in record and "stale" not in record
    assert wheels.trim_native_libraries(wheel) == []  # already trimmed


def test_carried_wheels_are_pinned_by_the_unsloth_lock():
    pins = wheels.lock_versions()
    assert all(name in pins for name in wheels.CARRIED)


@pytest.mark.slow
def test_cpu_rehearsal_writes_the_record(tmp_path, tiny_model, tiny_data_run):
    """The whole script at toy width on CPU: SFT points, DPO through TRL, unsloth refusing without CUDA."""
    from kofin.training import dpo

    carry = tmp_path / "carry"
    (carry / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model / name, carry / "tokenizer" / name)
    shutil.copy(tiny_data_run / "dpo" / "train.jsonl", carry / "pairs.jsonl")
    proc = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "run",
            "--carry",
            str(carry),
            "--results",
            str(tmp_path / "results"),
            "--no-install",
            "--python",
            sys.executable,
            "--unsloth-python",
            str(dpo.unsloth_env() / "bin" / "python"),
            "--toy",
            "--device",
            "cpu",
            "--r",
            "8",
            "--layers",
            "1,2",
            "--steps",
            "2",
            "--dpo-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [out] = (tmp_path / "results").glob("gpu-*.json")
    record = json.loads(out.read_text())
    sft = record["parts"]["sft"]
    assert [p["layers"] for p in sft["points"]] == [1, 2]
    for p in sft["points"]:
        assert p["tokens_per_s"] > 0 and p["trainable_params"] == p["estimate_trainable_params"]
        assert len(p["losses"]) == 2 and p["peak_reserved_gib"] is None  # CPU: no device memory to read
    assert sft["extrapolated_48_layers"]["estimate_gib"] > 0
    trl = record["parts"]["dpo_trl"]
    assert trl["ok"] and trl["steps"] == 2 and trl["tokens_per_s"] > 0 and trl["adapter_elements_changed"] >= 0.9
    unsloth = record["parts"]["dpo_unsloth"]
    if dpo.has_unsloth(dpo.unsloth_env()):
        assert not unsloth["ok"] and unsloth["exit"] == 3 and "needs a CUDA GPU" in unsloth["error"]
    assert record["dpo_comparison"] is None and "not run" in record["axolotl"]
    assert record["toy"] is True and record["environment"]["versions"]["torch"]
