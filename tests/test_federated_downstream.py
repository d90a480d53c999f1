"""A federated run is an adapter run like a pooled one: `kofin dpo` trains on top of it, `kofin merge`
folds it, `kofin eval` scores it — on a real `kofin fedlora` run (Flower simulation, two banks of the
tiny model, one round), not a hand-made directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from merge_fixtures import bf16, lora_deltas, merge_config, weights
from safetensors.torch import load_file

from kofin.config import load_config
from kofin.eval.config import EvalConfig
from kofin.eval.run import main as eval_main
from kofin.merge import run as merge_run
from kofin.rundir import RunDirError, require_complete
from kofin.training import dpo
from kofin.training.dpo_config import DpoConfig
from kofin.training.fedlora.config import FedLoraConfig
from kofin.training.fedlora.run import main as fedlora_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory, tiny_data_run) -> Path:
    overrides = [
        f"output_dir={tmp_path_factory.mktemp('fed') / 'fedlora'}",
        "banks=[{name: bank_a, shard: [0, 2], max_rows: 4}, {name: bank_b, shard: [1, 2], max_rows: 4}]",
        f"banks.0.data={tiny_data_run}",
        f"banks.1.data={tiny_data_run}",
        "rounds.num_rounds=1",
        "rounds.min_available_clients=2",
        "training.local_steps=2",
        "training.sequence_len=256",
        "lora.r=4",
        "lora.alpha=8",
    ]
    return fedlora_main(load_config(FedLoraConfig, ROOT / "configs/fedlora/tiny.yaml", overrides), quiet=True)


def dpo_config(out: Path, sft_run: Path, data_run: Path, *overrides: str) -> DpoConfig:
    return load_config(
        DpoConfig,
        ROOT / "configs/dpo/tiny.yaml",
        [f"output_dir={out}", f"sft_run={sft_run}", f"preferences=[{data_run}]", "training.max_steps=2", *overrides],
    )


def test_dpo_keeps_training_the_federated_adapter(fed_run, tiny_data_run, tmp_path):
    run = dpo.main(dpo_config(tmp_path / "dpo", fed_run, tiny_data_run), quiet=True)
    manifest = require_complete(run, "dpo")
    before, after = (
        load_file(str(fed_run / "adapter_model.safetensors")),
        load_file(str(run / "adapter_model.safetensors")),
    )
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before)  # DPO started from the federated adapter
    assert manifest["inputs"]["sft_run"]["path"] == str(fed_run)


def test_merge_folds_the_federated_adapter_into_its_base(fed_run, tiny_model, tmp_path):
    run = merge_run.main(merge_config(tmp_path / "merge", fed_run, "parameters.t=0"))
    manifest = require_complete(run, "merge")
    assert manifest["metrics"]["adapters_merged"] == [str(fed_run)]
    base, merged, delta = weights(tiny_model), weights(run / "tuned"), lora_deltas(fed_run)
    assert delta and all(d.abs().max() > 0 for d in delta.values())  # federated training moved every B
    for name, d in delta.items():
        want = bf16(base[name]).float() + d
        assert (merged[name].float() - want).abs().max() < 2**-8 * want.abs().max(), name


def test_merge_folds_the_federated_adapter_under_a_dpo_adapter(fed_run, tiny_data_run, tiny_model, tmp_path):
    tuned = dpo.main(dpo_config(tmp_path / "dpo", fed_run, tiny_data_run, "adapter_mode=merge"), quiet=True)
    assert require_complete(tuned, "dpo")["metrics"]["adapter_base"]["merged_first"] == [str(fed_run)]
    run = merge_run.main(merge_config(tmp_path / "merge", tuned, "parameters.t=0"))
    assert require_complete(run, "merge")["metrics"]["adapters_merged"] == [str(fed_run), str(tuned)]
    base, merged = weights(tiny_model), weights(run / "tuned")
    d_fed, d_dpo = lora_deltas(fed_run), lora_deltas(tuned)
    for name in d_fed:
        want = bf16(base[name]).float() + d_fed[name] + d_dpo[name]
        assert (merged[name].float() - want).abs().max() < 2**-7 * want.abs().max(), name  # two bf16 roundings


def test_eval_scores_the_federated_run_and_names_its_stage(fed_run, tmp_path):
    models = f"[{{name: base, base: true}}, {{name: federated, path: {fed_run}}}]"
    overrides = [f"output_dir={tmp_path}/eval", f"models={models}", "tasks=[general_mcq_ko]", "limit=2"]
    cfg = load_config(EvalConfig, None, [*overrides, "cpu_threads=1", "report=false"])
    metrics = json.loads((eval_main(cfg) / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["results"]) == {"base", "federated"}
    assert metrics["training"]["federated"]["stage"] == "fedlora"


def test_a_run_that_holds_no_adapter_stage_is_refused_by_name(tiny_data_run, tmp_path):
    with pytest.raises(RunDirError, match=r"sft_run .* written by stage 'data', expected a 'sft' or 'fedlora' run"):
        dpo.main(dpo_config(tmp_path / "dpo", tiny_data_run, tiny_data_run), quiet=True)
