"""kofin fedlora on Flower's simulation engine: three banks of the tiny model on this CPU (Ray actors).

Each run here is a real federation (ServerApp thread, ClientApps in Ray worker processes, PEFT
training on CPU); they are kept to two rounds of two local steps on six chats per bank.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kofin.config import load_config
from kofin.rundir import require_complete
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.run import main
from kofin.training.fedlora.server import STATE_FILE, FedLoraRoundError

ROOT = Path(__file__).resolve().parents[1]
BANKS = ("bank_a", "bank_b", "bank_c")
RUN_FILES = {
    "COMPLETE",
    "README.md",
    "adapter_base.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "chat_template.jinja",
    "config.yaml",
    "fedlora_rounds.json",
    "manifest.json",
    "server_opened_files.txt",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def bank_files(tiny_data_run, tmp_path_factory) -> dict[str, Path]:
    """Three banks' own files: disjoint rows of the bundled data."""
    rows = (tiny_data_run / "sft" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("banks")
    files = {}
    for k, name in enumerate(BANKS):
        mine = rows[k::3][:6]
        assert len(mine) == 6
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("\n".join(mine) + "\n", encoding="utf-8")
    return files


def fed_config(out: Path, files: dict[str, Path], *overrides: str) -> FedLoraConfig:
    base = [
        f"output_dir={out}",
        "training.local_steps=2",
        "training.sequence_len=256",
        "lora.r=4",
        "lora.alpha=8",
        "rounds.num_rounds=2",
        "engine.num_cpus=2",
    ]
    for i, name in enumerate(BANKS):
        base += [f"banks.{i}.data={files[name]}", f"banks.{i}.shard=null", f"banks.{i}.max_rows=null"]
    return load_config(FedLoraConfig, ROOT / "configs" / "fedlora" / "tiny.yaml", base + list(overrides))


def adapter_tensors(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory, bank_files) -> tuple[Path, FedLoraConfig]:
    cfg = fed_config(tmp_path_factory.mktemp("fed") / "fedlora", bank_files)
    return main(cfg, quiet=True), cfg


def trainable_chats(cfg: FedLoraConfig, files: dict[str, Path]) -> dict[str, int]:
    """Per bank, the chats with an assistant token within training.sequence_len: FedAvg's weight."""
    from kofin.training.fedlora import adapter as adapters
    from kofin.training.fedlora.client import BankData, encode, load_rows

    tokenizer = adapters.load_tokenizer(adapters.resolve_base_model(cfg))
    return {
        name: len(encode(load_rows(BankData(name, path))[0], tokenizer, cfg.training.sequence_len))
        for name, path in files.items()
    }


def test_simulation_writes_a_complete_run_with_the_rounds_in_the_manifest(sim_run, bank_files):
    run, cfg = sim_run
    samples = trainable_chats(cfg, bank_files)
    assert all(samples.values())
    assert {p.name for p in run.iterdir()} == RUN_FILES
    manifest = require_complete(run, "fedlora")
    m = manifest["metrics"]
    assert m["rounds_completed"] == 2 and m["federated"] is True and m["aggregation"] == "fedavg"
    assert [r["round"] for r in m["rounds"]] == [1, 2]
    for r in m["rounds"]:
        assert sorted(b["bank"] for b in r["banks"]) == list(BANKS)
        assert {b["bank"]: b["samples"] for b in r["banks"]} == samples
        assert all(b["steps"] == 2 and b["bytes_sent"] > 0 and b["tokens"] > 0 for b in r["banks"])
        assert r["bytes_from_banks"] == sum(b["bytes_sent"] for b in r["banks"]) and r["bytes_to_banks"] > 0
        assert r["wall_s"] > 0 and np.isfinite(r["train_loss"]) and r["dropped"] == []
    # Each bank trained on its own rows: three different data digests, the same in both rounds.
    digests = {r["round"]: {b["bank"]: b["data_sha256"] for b in r["banks"]} for r in m["rounds"]}
    assert len(set(digests[1].values())) == 3 and digests[1] == digests[2]
    assert manifest["wall_time_s"] > 0 and m["bytes_sent_total"] > m["adapter_bytes"] > 0
    assert m["gpu_hours"] == 0 and all(b["gpu_s"] == 0 for r in m["rounds"] for b in r["banks"])  # CPU banks
    assert set(manifest["inputs"]) == {"base_model"}  # the server hashes no bank's data


def test_the_adapter_trained_and_loads_as_eval_and_peft_load_an_sft_adapter(sim_run, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kofin.eval.adapters import adapter_stack, is_adapter_run
    from kofin.training.fedlora import adapter as adapters

    run, cfg = sim_run
    trained = adapter_tensors(run)
    initial = adapters.adapter_arrays(adapters.build_peft_model(cfg, tiny_model, for_training=False))
    assert set(trained) == set(initial)
    b_names = [n for n in trained if n.endswith("lora_B.weight")]
    assert b_names and all(not initial[n].any() for n in b_names)  # LoRA starts with B = 0 ...
    assert all(trained[n].any() for n in b_names)  # ... and federated training moved every B
    assert is_adapter_run(run)
    stack = adapter_stack(run)
    assert stack.base == tiny_model and stack.adapters == [run]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(run))
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(out.logits).all()


def test_the_server_process_never_opened_a_banks_data(sim_run, bank_files, tiny_model):
    run, _ = sim_run
    opened = set((run / "server_opened_files.txt").read_text(encoding="utf-8").splitlines())
    # The audit sees what the server does open from Python (safetensors maps the weights from Rust).
    assert {str(tiny_model / "config.json"), str(tiny_model / "tokenizer.json")} <= opened
    for path in bank_files.values():
        assert str(path) not in opened
    assert not [p for p in opened if p.startswith(str(next(iter(bank_files.values())).parent))]


def test_dp_noise_changes_the_result_and_reports_epsilon_per_round(sim_run, bank_files, tmp_path):
    plain, _ = sim_run
    cfg = fed_config(tmp_path / "dp", bank_files, "differential_privacy.enabled=true")
    run = main(cfg, quiet=True)
    m = require_complete(run)["metrics"]
    eps = [max(r["epsilon"].values()) for r in m["rounds"]]
    assert 0 < eps[0] < eps[1] and sorted(m["rounds"][1]["epsilon"]) == list(BANKS)
    assert m["delta"] == 1e-5 and m["epsilon_final"] == m["rounds"][1]["epsilon"]
    assert all(b["samples"] is None and b["update_norm"] > 0 for r in m["rounds"] for b in r["banks"])
    dp, clean = adapter_tensors(run), adapter_tensors(plain)
    assert any(not np.allclose(dp[n], clean[n]) for n in dp)


DROP_ROUND = ("rounds.num_rounds=1", "banks.2.data={gone}")


@pytest.fixture(scope="module")
def drop_run(tmp_path_factory, bank_files) -> tuple[Path, Path]:
    # bank_c receives the round's adapter, then its ClientApp fails (its data is gone): the round
    # still has rounds.min_available_clients (2) adapters, so it completes without bank_c.
    folder = tmp_path_factory.mktemp("drop")
    gone = folder / "gone.jsonl"
    cfg = fed_config(folder / "fedlora", bank_files, *(o.format(gone=gone) for o in DROP_ROUND))
    return main(cfg, quiet=True), gone


def test_a_bank_that_fails_mid_round_is_dropped_while_the_minimum_still_replies(drop_run):
    run, gone = drop_run
    (r,) = require_complete(run, "fedlora")["metrics"]["rounds"]
    assert sorted(b["bank"] for b in r["banks"]) == ["bank_a", "bank_b"]
    assert len(r["selected_nodes"]) == 3 and len(r["dropped"]) == 1
    assert "bank bank_c" in r["dropped"][0]["reason"] and str(gone) in r["dropped"][0]["reason"]
    assert r["bytes_from_banks"] == sum(b["bytes_sent"] for b in r["banks"])


def test_secagg_gives_the_fedavg_mean_without_an_adapter_reaching_the_server(drop_run, bank_files, tmp_path):
    # The same round as drop_run under Flower's SecAgg+: bank_c leaves after the key exchange, so its
    # masks are inside the others' vectors and the server must rebuild them from bank_a's and
    # bank_b's shares. The unmasked result is drop_run's plain FedAvg mean up to quantisation.
    plain, _ = drop_run
    gone = tmp_path / "gone.jsonl"
    overrides = [o.format(gone=gone) for o in DROP_ROUND] + ["secagg.enabled=true", "secagg.max_weight=8"]
    cfg = fed_config(tmp_path / "secagg", bank_files, *overrides)
    run = main(cfg, quiet=True)
    (r,) = require_complete(run, "fedlora")["metrics"]["rounds"]
    (p,) = require_complete(plain, "fedlora")["metrics"]["rounds"]
    assert r["secagg"] == {"plain_arrays_seen": 0}  # every reply's arrays were masked vectors in config records
    assert sorted(b["bank"] for b in r["banks"]) == ["bank_a", "bank_b"] and len(r["dropped"]) == 1
    assert "bank bank_c" in r["dropped"][0]["reason"] and str(gone) in r["dropped"][0]["reason"]
    by_bank = {b["bank"]: b for b in p["banks"]}
    for b in r["banks"]:  # the same local training as the plain round
        assert b["samples"] == by_bank[b["bank"]]["samples"] and b["train_loss"] == by_bank[b["bank"]]["train_loss"]
        assert b["bytes_sent"] > by_bank[b["bank"]]["bytes_sent"]  # keys, shares and the masked vector
    secure, clear = adapter_tensors(run), adapter_tensors(plain)
    sa = cfg.secagg
    # Stochastic rounding: at most one quantisation step per bank, divided by the sum of the weights.
    step = 2 * sa.clipping_range / sa.quantization_range
    weights = sum(
        round(b["samples"] / sa.max_weight * sa.quantization_range) / sa.quantization_range for b in r["banks"]
    )
    bound = len(r["banks"]) * step / weights + 1e-6  # + float32 rounding of the stored adapter
    worst = max(float(np.max(np.abs(secure[n] - clear[n]))) for n in clear)
    assert worst <= bound, (worst, bound)
    moved = max(float(np.max(np.abs(clear[n]))) for n in clear if n.endswith("lora_B.weight"))
    assert moved > 100 * bound  # the comparison is not trivially met by two untrained adapters


def test_a_round_with_fewer_replies_than_the_minimum_fails_naming_the_bank(bank_files, tmp_path):
    cfg = fed_config(
        tmp_path / "fail",
        bank_files,
        "rounds.num_rounds=1",
        "training.local_steps=1",
        "rounds.min_available_clients=3",
        f"banks.2.data={tmp_path / 'gone.jsonl'}",
    )
    with pytest.raises(FedLoraRoundError) as err:
        main(cfg, quiet=True)
    text = str(err.value)
    assert "round 1: 2 of 3 banks returned an adapter, fewer than rounds.min_available_clients 3" in text
    assert "bank bank_c" in text and "gone.jsonl" in text
    assert not (tmp_path / "fail").exists()


def test_a_killed_server_resumes_after_its_last_completed_round(bank_files, tmp_path):
    cfg = fed_config(tmp_path / "resume", bank_files, "rounds.num_rounds=3", "training.local_steps=1")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json(), encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from kofin.training.fedlora.config import FedLoraConfig; "
        "from kofin.training.fedlora.run import main; "
        "main(FedLoraConfig.model_validate_json(Path(sys.argv[1]).read_text()), quiet=True)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg_file)], start_new_session=True)
    state_file = Path(str(cfg.output_dir) + ".partial") / STATE_FILE
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_file.is_file() and json.loads(state_file.read_text())["completed_round"] >= 1:
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and everything it started (Ray)
        proc.wait()
    killed_at = json.loads(state_file.read_text())
    assert 1 <= killed_at["completed_round"] < 3, "the server finished before it could be killed"
    assert not (tmp_path / "resume" / "COMPLETE").exists()
    run = main(cfg, quiet=True)
    m = require_complete(run)["metrics"]
    assert m["resumed_after_round"] == [killed_at["completed_round"]]
    assert [r["round"] for r in m["rounds"]] == [1, 2, 3]
    assert m["rounds"][: killed_at["completed_round"]] == killed_at["rounds"]  # done rounds are not redone
