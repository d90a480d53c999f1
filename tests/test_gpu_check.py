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


def make_wheel(folder: Path, name: str, version: str, requires: list[str] = (), files: dict[str, str] = None) -> Path:
    """A minimal valid wheel: pip installs it, wheels.py reads its METADATA."""
    dist = f"{name}-{version}.dist-info"
    meta = "\n".join(
        ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    )
    contents = {
        **(files or {f"{name}/__init__.py": ""}),
        f"{dist}/METADATA": meta + "\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in contents.items():
            z.writestr(path, text)
        z.writestr(f"{dist}/RECORD", "".join(f"{wheels._record_line(p, t.encode())}\n" for p, t in contents.items()))
    return wheel


def test_needs_names_what_neither_the_host_nor_the_carry_provides(tmp_path):
    """What would have been an ImportError on the device (TRL needs datasets, absent from the H200 image)
    is named before a lease starts; markers for other platforms, extras and unsloth's optional imports are not."""
    make_wheel(
        tmp_path,
        "trl",
        "1.15.0",
        ["accelerate>=1.4", "datasets>=4.7.0", "rich; extra == 'cli'", "tyro>=1"],
    )
    make_wheel(tmp_path, "tyro", "1.0.17", ["eval-type-backport>=0.1.3; python_version < '3.10'"])
    make_wheel(tmp_path, "unsloth", "2026.10.9", ["xformers>=0.0.27", "mlx; sys_platform == 'darwin'", "Dill"])
    host = wheels.host_packages()
    assert {"accelerate", "torch", "transformers", "peft"} <= host and "datasets" not in host
    assert wheels.unmet_requirements(tmp_path, host) == {"trl": ["datasets>=4.7.0"], "unsloth": ["Dill"]}
    make_wheel(tmp_path, "datasets", "4.8.5", ["dill<0.4.2", "pyarrow>=21"])
    make_wheel(tmp_path, "dill", "0.4.1")
    assert wheels.unmet_requirements(tmp_path, host) == {}
    said = subprocess.run(
        [sys.executable, str(wheels.__file__), "needs", str(tmp_path)], capture_output=True, text=True
    )
    assert said.returncode == 0 and "on the H200 image or carried" in said.stdout


def test_run_installs_the_carried_wheels_ahead_of_the_hosts(tmp_path, tiny_model):
    """Without --no-install the carried wheels go to a --target folder on PYTHONPATH (the H200's python3 is a
    venv, so a venv made from it would not see its torch): a carried trl 99.0 is the one the check sees."""
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    shutil.copytree(tiny_model, carry / "tokenizer")
    (carry / "pairs.jsonl").write_text("", encoding="utf-8")
    make_wheel(carry / "wheels", "trl", "99.0")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "run", "--carry", str(carry), "--results", str(tmp_path / "results")]
        + ["--python", sys.executable, "--toy", "--device", "cpu", "--skip", "sft,dpo_unsloth,dpo_trl"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [out] = (tmp_path / "results").glob("gpu-*.json")
    record = json.loads(out.read_text())
    assert record["environment"]["versions"]["trl"] == "99.0" and record["parts"] == {}


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
    # unsloth refuses without CUDA, and a failed part makes the run's exit 1 (the record says which)
    unsloth_refuses = dpo.has_unsloth(dpo.unsloth_env())
    assert proc.returncode == (1 if unsloth_refuses else 0), proc.stderr[-3000:]
    assert ("dpo_unsloth: failed" in proc.stderr) == unsloth_refuses
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
    if unsloth_refuses:
        assert not unsloth["ok"] and unsloth["exit"] == 3 and "needs a CUDA GPU" in unsloth["error"]
    assert record["dpo_comparison"] is None and "not run" in record["axolotl"]
    assert record["toy"] is True and record["environment"]["versions"]["torch"]
