"""`kofin eval` scores SFT and DPO run directories directly: the base with the run's LoRA adapters merged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from merge_fixtures import adapter_run, lora_deltas

from kofin.config import load_config
from kofin.eval.adapters import AdapterRunError
from kofin.eval.config import EvalConfig
from kofin.eval.engine import TransformersBackend
from kofin.eval.run import main

REQUESTS = [
    ("정기예금을 만기 전에 해지하면\n정답:", " 중도해지이율"),
    ("환율", " 상승"),
    ("예금자보호 한도는", " 1억원"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    sft = adapter_run(root / "sft", tiny_model)
    # adapter_mode: merge DPO: its adapter applies to base + the SFT adapter, as its manifest records.
    dpo = adapter_run(
        root / "dpo",
        tiny_model,
        stage="dpo",
        seed=7,
        r=2,
        metrics={"adapter_base": {"base_model": str(tiny_model), "merged_first": [str(sft)]}},
    )
    return sft, dpo


def _model_with_deltas(tiny_model: Path, out: Path, *deltas: dict) -> Path:
    """The tiny model with W + scale * B @ A added by hand (not through peft), saved as a plain folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    state = model.state_dict()
    with torch.no_grad():
        for delta in deltas:
            for name, d in delta.items():
                state[name] += d
    model.load_state_dict(state)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def _logprobs(path: Path) -> list[float]:
    return [
        s.logprob for s in TransformersBackend(path, batch_size=2, device="cpu", cpu_threads=1).loglikelihood(REQUESTS)
    ]


def test_dpo_run_scores_as_base_plus_both_adapters(runs, tiny_model, tmp_path):
    sft, dpo = runs
    by_hand = _model_with_deltas(tiny_model, tmp_path / "by_hand", lora_deltas(sft), lora_deltas(dpo))
    ours = _logprobs(dpo)
    assert ours == pytest.approx(_logprobs(by_hand), abs=1e-3)
    # Both adapters matter: the SFT adapter alone, or the base, score differently.
    assert _logprobs(sft) != pytest.approx(ours, abs=1e-3)
    assert _logprobs(tiny_model) != pytest.approx(ours, abs=1e-3)


def test_kofin_eval_on_base_sft_and_dpo_runs(runs, tmp_path):
    sft, dpo = runs
    models = f"[{{name: base, base: true}}, {{name: sft, path: {sft}}}, {{name: dpo, path: {dpo}}}]"
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}/eval",
            f"models={models}",
            "tasks=[general_mcq_ko]",
            "limit=2",
            "cpu_threads=1",
            "report=false",
        ],
    )
    metrics = json.loads((main(cfg) / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["results"]) == {"base", "sft", "dpo"} and set(metrics["forgetting"]) == {"sft", "dpo"}
    assert metrics["training"]["sft"]["stage"] == "sft" and metrics["training"]["dpo"]["stage"] == "dpo"
    records = [
        json.loads(x)
        for x in (tmp_path / "eval/records/dpo/general_mcq_ko.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    model_json = json.loads((tmp_path / "eval/records/dpo/model.json").read_text(encoding="utf-8"))
    assert model_json["base"] and len(model_json["merged_first"]) == 1  # a changed SFT run invalidates these records
    assert len(records) == 2


def test_adapter_on_a_missing_base_says_what_to_do(tmp_path, tiny_model):
    orphan = adapter_run(
        tmp_path / "dpo", tiny_model, stage="dpo", metrics={"adapter_base": {"base_model": str(tmp_path / "gone")}}
    )
    cfg = load_config(
        EvalConfig,
        None,
        [f"output_dir={tmp_path}/eval", f"models=[{{name: dpo, path: {orphan}}}]", "tasks=[general_mcq_ko]"],
    )
    with pytest.raises(
        AdapterRunError, match=r"models\[dpo\].path: .* trained on .*gone, which is not a local model folder here"
    ):
        main(cfg)


def test_a_merge_run_directory_is_scored_on_its_merged_model(tmp_path, tiny_model):
    import shutil

    from kofin.rundir import open_run

    out = tmp_path / "merge-tiny"
    with open_run("merge", {"output_dir": str(out)}) as run:  # laid out as `kofin merge` writes: merged/ beside tuned/
        shutil.copytree(
            tiny_model, run.path / "merged", ignore=shutil.ignore_patterns("manifest.json", "COMPLETE", "config.yaml")
        )
        (run.path / "tuned").mkdir()
        run.metrics.update(method="slerp")
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}/eval",
            f"models=[{{name: base, base: true}}, {{name: merged, path: {out}}}]",
            "tasks=[general_mcq_ko]",
            "limit=2",
            "cpu_threads=1",
            "report=false",
        ],
    )
    metrics = json.loads((main(cfg) / "metrics.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "eval/records/merged/model.json").read_text())["path"] == str(out / "merged")
    assert metrics["training"]["merged"]["stage"] == "merge"
    # The same weights as the base: the same scores, so every forgetting delta is 0.
    assert all(v == 0 for v in metrics["forgetting"]["merged"]["general_mcq_ko"].values())
