"""DPO through TRL on the embedded tiny model, on top of a real axolotl SFT run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kofin.config import ConfigError, load_config
from kofin.rundir import RunDirError, require_complete
from kofin.training import dpo
from kofin.training.dpo_config import DpoConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "dpo" / "tiny.yaml"


@pytest.fixture(scope="module")
def sft_run(axolotl_sft_run) -> Path:
    return axolotl_sft_run  # one real axolotl SFT run per session (conftest), shared with the merge tests


def dpo_config(out: Path, sft_run: Path | None, data_run: Path, *overrides: str) -> DpoConfig:
    return load_config(
        DpoConfig,
        TINY,
        [
            f"output_dir={out}",
            f"sft_run={sft_run}" if sft_run else "sft_run=null",
            f"preferences=[{data_run}]",
            "training.max_steps=4",
            *overrides,
        ],
    )


def rewards(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "rewards/margins" in r]


@pytest.mark.slow
def test_dpo_keeps_training_the_sft_adapter(tmp_path, sft_run, tiny_data_run):
    run = dpo.main(dpo_config(tmp_path / "dpo", sft_run, tiny_data_run), quiet=True)
    manifest = require_complete(run, "dpo")
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    assert not (run / "ref").exists() and not (run / "trainer").exists()  # only the trained adapter is an output
    before, after = (
        load_file(str(sft_run / "adapter_model.safetensors")),
        load_file(str(run / "adapter_model.safetensors")),
    )
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # every A and B moved
    steps = rewards(run)
    assert len(steps) == 4
    for step in steps:
        assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= step.keys()
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert steps[-1]["rewards/margins"] > 0  # the policy learned to prefer the chosen answers
    m = manifest["metrics"]
    assert (
        m["backend"] == "trl"
        and m["steps"] == 4
        and m["reward_margin_last"] == pytest.approx(steps[-1]["rewards/margins"], rel=1e-4)
    )
    assert manifest["inputs"]["sft_run"]["sha256"]
    assert (
        json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"]
        == m["adapter_base"]["base_model"]
    )


@pytest.mark.slow
def test_dpo_on_merged_sft_trains_a_new_adapter(tmp_path, sft_run, tiny_data_run):
    run = dpo.main(
        dpo_config(
            tmp_path / "dpo", sft_run, tiny_data_run, "adapter_mode=merge", "lora.r=4", "training.loss_type=ipo"
        ),
        quiet=True,
    )
    m = require_complete(run, "dpo")["metrics"]
    assert m["adapter_base"]["merged_first"] == [str(sft_run)]
    adapter = load_file(str(run / "adapter_model.safetensors"))
    assert json.loads((run / "adapter_config.json").read_text())["r"] == 4
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero
    steps = rewards(run)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # reference = merged SFT, new adapter off
    assert steps[-1]["rewards/margins"] != 0
    assert json.loads((run / "adapter_base.json").read_text())["merged_first"] == [str(sft_run)]


def test_bad_pair_is_named_before_training(tmp_path, tiny_model):
    pairs = tmp_path / "pairs.jsonl"
    good = {
        "prompt": [{"role": "user", "content": "질문"}],
        "chosen": [{"role": "assistant", "content": "근거 있는 답 [1]"}],
        "rejected": [{"role": "assistant", "content": "모르겠습니다"}],
    }
    bad = {**good, "rejected": good["chosen"]}
    pairs.write_text(
        json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    cfg = load_config(DpoConfig, None, [f"output_dir={tmp_path / 'out'}", f"preferences=[{pairs}]"])
    with pytest.raises(dpo.DpoInputError, match=r"pairs\.jsonl:2  rejected: identical to chosen"):
        dpo.main(cfg, quiet=True)
    assert not (tmp_path / "out.partial").exists()


def test_sft_run_must_be_complete(tmp_path, tiny_data_run):
    (tmp_path / "sft").mkdir()
    with pytest.raises(RunDirError, match=r"sft_run .* not a complete run"):
        dpo.main(dpo_config(tmp_path / "dpo", tmp_path / "sft", tiny_data_run), quiet=True)


@pytest.mark.slow
def test_4bit_dpo_through_trl_keeps_fp32_adapters_that_all_move(tmp_path, sft_run, tiny_data_run):
    """TRL casts a 4-bit model's adapter to bf16, where DPO-sized updates round away; kofin keeps it fp32."""
    run = dpo.main(
        dpo_config(
            tmp_path / "dpo",
            sft_run,
            tiny_data_run,
            "load_in_4bit=true",
            "training.precision=bf16",
            "training.learning_rate=5e-6",
            "training.max_steps=3",
        ),
        quiet=True,
    )
    m = require_complete(run, "dpo")["metrics"]
    before, after = (
        load_file(str(sft_run / "adapter_model.safetensors")),
        load_file(str(run / "adapter_model.safetensors")),
    )
    assert {v.dtype for v in after.values()} == {torch.float32}
    changed = sum(int((before[k] != after[k]).sum()) for k in before) / sum(v.numel() for v in before.values())
    assert changed >= 0.9, changed
    assert m["adapter_elements_changed"] == pytest.approx(changed, abs=1e-6)  # measured in the recipe, same answer
    assert m["backend"] == "trl" and m["steps"] == 3


@pytest.mark.slow
def test_bf16_adapters_on_a_4bit_base_leave_many_elements_unchanged(tmp_path, sft_run, tiny_data_run, monkeypatch):
    """The failure the fp32 rule prevents, shown on the same run: with TRL's bf16 cast left in place
    DPO-sized updates round away (here 45.5% of elements changed in 3 steps, against 99.999% in fp32)."""
    from kofin.training import dpo_recipe

    monkeypatch.setattr(dpo_recipe, "keep_adapters_fp32", lambda model, before: None)
    run = dpo.main(
        dpo_config(
            tmp_path / "dpo",
            sft_run,
            tiny_data_run,
            "load_in_4bit=true",
            "training.precision=bf16",
            "training.learning_rate=5e-6",
            "training.max_steps=3",
        ),
        quiet=True,
    )
    m = require_complete(run, "dpo")["metrics"]
    assert {v.dtype for v in load_file(str(run / "adapter_model.safetensors")).values()} == {torch.bfloat16}
    assert m["adapter_elements_changed"] < 0.6, m["adapter_elements_changed"]


def test_run_holds_the_job_it_trained(tmp_path, sft_run, tiny_data_run):
    run = dpo.main(dpo_config(tmp_path / "dpo", sft_run, tiny_data_run, "training.max_steps=1"), quiet=True)
    job = json.loads((run / "dpo_job.json").read_text())
    # Paths name the finished run, so `python training/dpo_recipe.py dpo_job.json` reruns it as written.
    assert job["output_dir"] == str(run) and job["pairs"] == str(run / "pairs.jsonl") and job["sft_run"] == str(sft_run)
    assert len((run / "pairs.jsonl").read_text().splitlines()) == require_complete(run)["metrics"]["pairs"]
    assert (run / "trainer_log.json").is_file() and not (run / "trainer").exists()
    import trl

    trained_with = require_complete(run)["metrics"]["trained_with"]
    assert trained_with["trl"] == trl.__version__ and trained_with["prefix"] == sys.prefix  # in-process: kofin's env


def test_unsloth_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU host says, on any host
    with pytest.raises(dpo.DpoInputError, match="needs a CUDA GPU"):
        dpo.choose_backend("unsloth")
    assert dpo.choose_backend("auto") == "trl"
    assert dpo.choose_backend("auto", merge_adapter=True) == "trl"
    # With CUDA but no unsloth env, the message says how to make one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(dpo.DpoInputError, match=r"no unsloth env at .*nowhere; create it with `make unsloth-env`"):
        dpo.choose_backend("unsloth", env=tmp_path / "nowhere")
    assert dpo.choose_backend("auto", env=tmp_path / "nowhere") == "trl"


def test_merge_mode_refuses_4bit(tmp_path):
    with pytest.raises(ConfigError, match="must stay 16-bit"):
        load_config(
            DpoConfig,
            None,
            [f"output_dir={tmp_path}", "sft_run=x", "preferences=[p.jsonl]", "adapter_mode=merge", "load_in_4bit=true"],
        )


@pytest.mark.gpu
def test_unsloth_dpo_on_gpu(tmp_path, sft_run, tiny_data_run):
    """Where CUDA and the unsloth env are present, auto picks unsloth and trains the same recipe in that env."""
    assert dpo.has_unsloth(dpo.unsloth_env()), "run `make unsloth-env` (make test does it)"
    run = dpo.main(
        dpo_config(tmp_path / "dpo", sft_run, tiny_data_run, "training.precision=bf16", "load_in_4bit=true"),
        quiet=True,
    )
    m = require_complete(run, "dpo")["metrics"]
    assert m["backend"] == "unsloth" and m["reward_margin_last"] > 0 and m["adapter_elements_changed"] >= 0.9
    assert (run / "logs" / "dpo.log").is_file()


def test_prompt_longer_than_max_length_is_named(tmp_path, tiny_model):
    pairs = tmp_path / "pairs.jsonl"
    row = {
        "prompt": [{"role": "user", "content": "예금자보호 " * 300}],
        "chosen": [{"role": "assistant", "content": "5천만 원 [1]"}],
        "rejected": [{"role": "assistant", "content": "모릅니다"}],
    }
    pairs.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    cfg = load_config(
        DpoConfig, None, [f"output_dir={tmp_path / 'out'}", f"preferences=[{pairs}]", "training.max_length=128"]
    )
    with pytest.raises(dpo.DpoInputError, match=r"pairs\.jsonl:1  prompt is \d+ tokens >= training\.max_length 128"):
        dpo.main(cfg, quiet=True)
    assert not (tmp_path / "out.partial").exists()


def test_settings_dpo_would_ignore_or_trip_on(tmp_path):
    base = [f"output_dir={tmp_path}", "sft_run=x", "preferences=[p.jsonl]"]
    with pytest.raises(ConfigError, match="lora settings are unused with adapter_mode: stack"):
        load_config(DpoConfig, None, [*base, "lora.r=64"])
    load_config(DpoConfig, None, [*base, "adapter_mode=merge", "lora.r=64"])  # a new adapter: fine
    with pytest.raises(ConfigError, match="exo_pair needs training.label_smoothing > 0"):
        load_config(DpoConfig, None, [*base, "training.loss_type=exo_pair"])
