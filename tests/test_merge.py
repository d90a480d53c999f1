"""kofin merge on tiny models: adapter folding, every mergekit method, checks before and after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from merge_fixtures import TINY, adapter_run, bf16, lora_deltas, merge_config, weights
from safetensors.torch import save_file

from kofin.cli import main as kofin_main
from kofin.merge import run as merge_run
from kofin.merge.adapter import MergeInputError
from kofin.merge.checks import MergeCheckError
from kofin.rundir import require_complete

PROJ = ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj")  # both parents differ here


@pytest.fixture(scope="module")
def instruct(tiny_model) -> Path:
    """The stand-in instruct model: the tiny model built with seed 1 (same tokenizer, other weights)."""
    from kofin.tiny import default_tiny_model

    return default_tiny_model(seed=1)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model) -> Path:
    return adapter_run(tmp_path_factory.mktemp("sft") / "sft", tiny_model)


@pytest.fixture(scope="module")
def slerp_t0(tmp_path_factory, sft_run, instruct) -> Path:
    return merge_run.main(merge_config(tmp_path_factory.mktemp("m") / "t0", sft_run, "parameters.t=0"))


def proj_names(w: dict) -> list[str]:
    return [k for k in w if any(p in k for p in PROJ)]


def test_run_directory_is_complete(slerp_t0, sft_run):
    manifest = require_complete(slerp_t0, "merge")
    assert {p.name for p in slerp_t0.iterdir()} == {
        "tuned",
        "merged",
        "mergekit.yaml",
        "reproduce.sh",
        "checks.json",
        "config.yaml",
        "manifest.json",
        "COMPLETE",
    }
    merged = {p.name for p in (slerp_t0 / "merged").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= merged
    assert "Assistant:" in (slerp_t0 / "merged" / "chat_template.jinja").read_text()  # EEVE's template survives
    assert "Assistant:" in (slerp_t0 / "tuned" / "chat_template.jinja").read_text()
    m = manifest["metrics"]
    assert m["adapters_merged"] == [str(sft_run)]
    assert set(m["perplexity"]) == {"merged", "tuned", "models.0"} and all(v > 1 for v in m["perplexity"].values())
    assert m["phases"]["mergekit"]["peak_rss_mb"] > 0 and manifest["peak_rss_mb"]["self"] > 0
    report = json.loads((slerp_t0 / "checks.json").read_text())
    assert report["tensors"]["expected"] == report["tensors"]["tensors"] == 39
    assert report["generation"]["new_tokens"] == 4
    assert manifest["inputs"]["tuned_run"]["sha256"] and manifest["inputs"]["models_0"]["sha256"]


def test_adapter_folded_into_bf16_base(slerp_t0, sft_run, tiny_model):
    base, tuned, deltas = weights(tiny_model), weights(slerp_t0 / "tuned"), lora_deltas(sft_run)
    assert base.keys() == tuned.keys() and all(t.dtype == torch.bfloat16 for t in tuned.values())
    assert len(deltas) == 4 * 7  # all-linear: q k v o gate up down in 4 layers
    for name, w in tuned.items():
        expected = bf16(base[name]).float() + deltas.get(name, 0)
        # bf16 base + the update, rounded once to bf16 (one ulp of slack for the order of rounding)
        assert torch.allclose(w.float(), expected, rtol=2**-7, atol=1e-6), name
        if name not in deltas:
            assert torch.equal(w, bf16(base[name])), name


def test_slerp_endpoints_equal_the_parents(slerp_t0, sft_run, instruct, tmp_path):
    tuned, merged0 = weights(slerp_t0 / "tuned"), weights(slerp_t0 / "merged")
    assert all(torch.equal(merged0[k], tuned[k]) for k in tuned)  # t=0: the tuned model, bit for bit
    t1 = merge_run.main(merge_config(tmp_path / "t1", sft_run, "parameters.t=1"))
    other, merged1 = weights(instruct), weights(t1 / "merged")
    assert all(torch.equal(merged1[k], bf16(other[k])) for k in other)  # t=1: the other model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["slerp", "linear", "ties", "dare_ties", "task_arithmetic", "model_stock"])
def test_each_method_merges_a_loadable_model_unlike_both_parents(method, sft_run, instruct, tiny_model, tmp_path):
    overrides = {
        "slerp": [],  # configs/merge/tiny.yaml: per-layer t gradients for self_attn and mlp
        "linear": ["tuned_parameters={weight: 0.5}", "models.0.parameters={weight: 0.5}"],
        "ties": ["tuned_parameters={weight: 0.5, density: 0.5}", "models.0.parameters={weight: 0.5, density: 0.5}"],
        "dare_ties": [
            "tuned_parameters={weight: 0.5, density: 0.5}",
            "models.0.parameters={weight: 0.5, density: 0.5}",
        ],
        "task_arithmetic": ["tuned_parameters={weight: 0.7}", "models.0.parameters={weight: 0.3}"],
        "model_stock": [],
    }[method]
    extra = ["parameters={}"] if method != "slerp" else []
    run = merge_run.main(merge_config(tmp_path / method, sft_run, f"method={method}", *extra, *overrides))
    m = require_complete(run, "merge")["metrics"]
    assert m["method"] == method and m["generation"] is not None
    tuned, other, merged = weights(run / "tuned"), weights(instruct), weights(run / "merged")
    assert merged.keys() == tuned.keys()
    assert all(torch.isfinite(t).all() for t in merged.values())
    names = proj_names(merged)
    if method == "slerp":
        # t gradient [0, .5, .3, .7, 1] over 4 layers on attention, reversed on the MLP
        q0, q3, d0 = (
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.3.self_attn.q_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
        )
        assert torch.equal(merged[q0], tuned[q0]) and torch.equal(merged[q3], bf16(other[q3]))
        assert torch.equal(merged[d0], bf16(other[d0]))
        names = [n for n in names if ".layers.1." in n or ".layers.2." in n]
    for n in names:
        assert not torch.equal(merged[n], tuned[n]) and not torch.equal(merged[n], bf16(other[n])), n
    if method == "linear":
        for n in names:
            assert torch.allclose(
                merged[n].float(), 0.5 * tuned[n].float() + 0.5 * bf16(other[n]).float(), atol=2e-3
            ), n
    if method == "task_arithmetic":
        base = weights(tiny_model)
        for n in names:
            b = bf16(base[n]).float()
            want = b + 0.7 * (tuned[n].float() - b) + 0.3 * (bf16(other[n]).float() - b)
            assert torch.allclose(merged[n].float(), want, atol=4e-3), n


@pytest.mark.slow
def test_mergekit_yaml_reproduces_the_weights_offline(sft_run, tmp_path, monkeypatch):
    import huggingface_hub

    asked = []
    # mergekit's model-card writer asks the hub about any path that is not absolute; kofin's never are.
    monkeypatch.setattr(huggingface_hub, "repo_exists", lambda *a, **k: asked.append(a) or False)
    # ties, not dare_ties: dare's random masks follow mergekit's task schedule, whose tie order
    # depends on object hashes that differ between processes, so dare is repeatable within a
    # process but not bit for bit across them (seen in CI). ties trims by magnitude: deterministic.
    run = merge_run.main(
        merge_config(
            tmp_path / "ties",
            sft_run,
            "method=ties",
            "parameters={}",
            "tuned_parameters={weight: 0.6, density: 0.4}",
            "models.0.parameters={weight: 0.4, density: 0.4}",
        )
    )
    recipe = yaml.safe_load((run / "mergekit.yaml").read_text())
    paths = [recipe["base_model"]] + [m["model"] for m in recipe["models"]]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in paths)  # absolute: no hub lookup
    assert (run / "merged" / "mergekit_config.yml").read_text() == (run / "mergekit.yaml").read_text()
    assert asked == []
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    again = tmp_path / "again"
    out = subprocess.run(["sh", str(run / "reproduce.sh"), str(again)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = weights(run / "merged"), weights(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    base = weights(Path(recipe["base_model"]))
    assert any(not torch.equal(first[k], bf16(base[k])) for k in first)  # a real merge, not a copy of the base


def test_planted_nan_is_caught_and_named(sft_run, instruct, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(instruct, poisoned)
    w = weights(poisoned)
    w["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(w, str(poisoned / "model.safetensors"), metadata={"format": "pt"})
    cfg = merge_config(
        tmp_path / "out",
        sft_run,
        "method=linear",
        "parameters={}",
        "tuned_parameters={weight: 0.5}",
        f"models.0.path={poisoned}",
        "models.0.tiny_seed=null",
        "models.0.parameters={weight: 0.5}",
    )
    with pytest.raises(
        MergeCheckError, match=r"model\.layers\.1\.mlp\.down_proj\.weight in model\.safetensors: 1 NaN/Inf"
    ):
        merge_run.main(cfg)
    assert not (tmp_path / "out").exists()  # never marked complete


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory) -> Path:
    """A tiny model whose tokenizer was trained to a smaller vocabulary."""
    from kofin.tiny import TinyConfig, build_tiny_model

    return build_tiny_model(TinyConfig(output_dir=tmp_path_factory.mktemp("vocab") / "small", vocab_size=4096, seed=1))


@pytest.fixture
def other_vocab(small_vocab, tmp_path) -> Path:
    """small_vocab with its weights replaced by garbage: only a check that reads no tensor gets past it."""
    out = tmp_path / "garbage-weights"
    shutil.copytree(small_vocab, out)
    (out / "model.safetensors").write_bytes(b"not a tensor file")
    return out


def test_vocab_mismatch_fails_before_any_tensor_is_read(sft_run, other_vocab, tmp_path):
    cfg = merge_config(tmp_path / "out", sft_run, f"models.0.path={other_vocab}", "models.0.tiny_seed=null")
    with pytest.raises(MergeInputError) as err:
        merge_run.main(cfg)
    msg = str(err.value)
    assert f"models.0 ({other_vocab})" in msg and f"tuned_run ({sft_run}" in msg
    assert "vocab_size" in msg and "tokenizer_source" in msg
    assert not (tmp_path / "out.partial").exists()  # nothing started


@pytest.mark.slow
def test_tokenizer_source_union_merges_different_vocabularies(sft_run, small_vocab, tmp_path):
    run = merge_run.main(
        merge_config(
            tmp_path / "out",
            sft_run,
            f"models.0.path={small_vocab}",
            "models.0.tiny_seed=null",
            "tokenizer_source=union",
        )
    )
    assert yaml.safe_load((run / "mergekit.yaml").read_text())["tokenizer_source"] == "union"
    from transformers import AutoTokenizer

    merged_vocab = AutoTokenizer.from_pretrained(str(run / "merged")).get_vocab()
    assert merged_vocab.keys() >= AutoTokenizer.from_pretrained(str(small_vocab)).get_vocab().keys()
    assert merged_vocab.keys() >= AutoTokenizer.from_pretrained(str(sft_run)).get_vocab().keys()
    assert require_complete(run, "merge")["metrics"]["generation"]


def test_architecture_mismatch_names_both_models_and_the_field(sft_run, instruct, tmp_path, capsys):
    wider = tmp_path / "wider"
    shutil.copytree(instruct, wider)
    cfg = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 512}))
    code = kofin_main(
        [
            "merge",
            "--config",
            str(TINY),
            f"output_dir={tmp_path / 'out'}",
            f"tuned_run={sft_run}",
            f"models.0.path={wider}",
            "models.0.tiny_seed=null",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"models.0 ({wider}) and tuned_run" in err and "intermediate_size: 512 vs 448" in err


def test_dpo_run_on_merged_sft_folds_both_adapters(tmp_path, tiny_model, sft_run, instruct):
    """adapter_mode: merge DPO: the SFT adapter is merged into the base before the DPO adapter."""
    dpo = adapter_run(
        tmp_path / "dpo",
        tiny_model,
        stage="dpo",
        seed=7,
        r=2,
        metrics={"adapter_base": {"base_model": str(tiny_model), "merged_first": [str(sft_run)]}},
    )
    run = merge_run.main(merge_config(tmp_path / "m", dpo, "parameters.t=0"))
    assert require_complete(run, "merge")["metrics"]["adapters_merged"] == [str(sft_run), str(dpo)]
    base, tuned, d1, d2 = weights(tiny_model), weights(run / "tuned"), lora_deltas(sft_run), lora_deltas(dpo)
    for name in d1:
        want = bf16(base[name]).float() + d1[name] + d2[name]
        slack = 2**-7 * want.abs().max()  # two bf16 roundings: after the SFT merge, after the DPO merge
        assert (tuned[name].float() - want).abs().max() < slack, name
        without_dpo = bf16(base[name]).float() + d1[name]
        assert (tuned[name].float() - without_dpo).abs().max() > slack, name  # the DPO adapter is in there


def test_quantized_base_is_refused(tmp_path, sft_run, instruct):
    fake = tmp_path / "base4bit"
    fake.mkdir()
    cfg = json.loads((instruct / "config.json").read_text())
    (fake / "config.json").write_text(
        json.dumps({**cfg, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    )
    with pytest.raises(MergeInputError, match=r"base_model: .*base4bit holds bitsandbytes weights .*16-bit checkpoint"):
        merge_run.main(merge_config(tmp_path / "out", sft_run, f"base_model={fake}"))


@pytest.mark.slow
def test_merge_runs_out_of_core(tmp_path, tiny_model):
    """mergekit streams tensors: its phase adds less than the two models' sizes to peak RSS, and its
    private (anonymous) memory grows by less than one model."""
    from merge_fixtures import wide_model

    tuned_base, other = wide_model(tmp_path / "a", tiny_model, 0), wide_model(tmp_path / "b", tiny_model, 1)
    sft = adapter_run(tmp_path / "sft", tuned_base)
    probe = tmp_path / "probe.txt"
    probe.write_text("예금을 중도에 해지하면 약정한 금리보다 낮은 중도해지 이율이 적용됩니다.\n", encoding="utf-8")
    run = merge_run.main(
        merge_config(
            tmp_path / "m",
            sft,
            "method=linear",
            "parameters={}",
            "tuned_parameters={weight: 0.5}",
            f"models.0.path={other}",
            "models.0.tiny_seed=null",
            "models.0.parameters={weight: 0.5}",
            "options.out_shard_size=10M",
            f"checks.probe_file={probe}",
        )
    )
    m = require_complete(run, "merge")["metrics"]
    sizes_mb = (m["model_bytes"]["tuned"] + m["model_bytes"]["models.0"]) / 2**20
    assert sizes_mb > 180  # ~98 MB each in bf16: large enough to see
    assert len(list((run / "merged").glob("*.safetensors"))) > 1  # 10M-parameter shards
    mk = m["phases"]["mergekit"]
    assert mk["peak_rss_mb"] - mk["rss_start_mb"] < sizes_mb + 64  # the bound: both models + a fixed margin
    # Out of core: private memory grows by a few tensors and one output shard, never by a whole model
    # (a merge that loaded its inputs would grow by both, ~sizes_mb, plus the output).
    assert mk["peak_anon_mb"] - mk["anon_start_mb"] < sizes_mb / 2


@pytest.mark.slow
def test_merges_a_real_kofin_sft_run(axolotl_sft_run, tiny_model, instruct, tmp_path):
    run = merge_run.main(merge_config(tmp_path / "m", axolotl_sft_run, "parameters.t=0.5"))
    m = require_complete(run, "merge")["metrics"]
    assert m["adapters_merged"] == [str(axolotl_sft_run)]
    base, tuned, deltas = weights(tiny_model), weights(run / "tuned"), lora_deltas(axolotl_sft_run)
    assert deltas and all(k in tuned for k in deltas)
    changed = {k for k in tuned if not torch.equal(tuned[k], bf16(base[k]))}
    assert changed and changed <= set(deltas)  # only the adapter's target modules moved
    merged = weights(run / "merged")
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], tuned[q]) and not torch.equal(merged[q], bf16(weights(instruct)[q]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["parameters={}"], r"command line  \(top level\): method slerp needs parameters.t: 0 = the tuned model"),
        (
            ["method=linear", "parameters={}"],
            "method linear needs a weight for every model; add weight to tuned_parameters, models.0.parameters",
        ),
        (
            ["method=model_stock", "parameters={}", "tuned_parameters={weight: 1}"],
            "model_stock computes each model's weight itself",
        ),
        (["models.0.path=/models/x"], "models.0: set exactly one of path .* or tiny_seed"),
        (["tokenizer_source=model"], "tokenizer_source: model goes with tokenizer_model"),
        (["method=slerp", "models=[{tiny_seed: 1}, {tiny_seed: 2}]"], "exactly one entry in models \\(got 2\\)"),
    ],
)
def test_config_errors_say_what_to_fix(overrides, message, tmp_path):
    from kofin.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        merge_config(tmp_path / "out", tmp_path / "run", *overrides)


def test_missing_model_folder_is_named(sft_run, tmp_path):
    with pytest.raises(
        MergeInputError, match=r"models\.0: /models/yanolja/EEVE-Korean-Instruct-10\.8B-v1\.0 has no config\.json"
    ):
        merge_run.main(
            merge_config(
                tmp_path / "out",
                sft_run,
                "models.0.path=/models/yanolja/EEVE-Korean-Instruct-10.8B-v1.0",
                "models.0.tiny_seed=null",
            )
        )


def test_eval_takes_a_merge_run_directory_as_a_model(slerp_t0):
    """Eval configs name the merge run (its manifest carries the lineage and cost); the weights
    are in its merged/ folder."""
    from kofin.eval.config import EvalModel
    from kofin.eval.run import resolve_model

    path, manifest = resolve_model(EvalModel(name="merged", path=slerp_t0))
    assert path == slerp_t0 / "merged" and (path / "config.json").is_file()
    assert manifest["stage"] == "merge"


def test_eval_cost_table_follows_a_merged_model_back_to_its_training_runs(slerp_t0, sft_run):
    from kofin.eval.config import EvalModel
    from kofin.eval.run import resolve_model, training_table

    rows = training_table({"merged": resolve_model(EvalModel(name="merged", path=slerp_t0))}, [])
    assert list(rows) == [f"sft:{sft_run.name}", "merged"]  # upstream first, then the model's own run
    assert rows[f"sft:{sft_run.name}"]["stage"] == "sft" and rows["merged"]["stage"] == "merge"


def _with_special_token(src: Path, out: Path, key: str) -> Path:
    """A copy of `src` whose tokenizer names another existing token as `key` (same vocabulary, same weights)."""
    from transformers import AutoTokenizer

    shutil.copytree(src, out)
    tok = AutoTokenizer.from_pretrained(str(src))
    other = next(t for t in tok.get_vocab() if t not in tok.all_special_tokens and t.isalpha())
    setattr(tok, key, other)
    tok.save_pretrained(str(out))
    return out


def test_pad_token_difference_warns_but_eos_difference_refuses(sft_run, instruct, tmp_path, capsys):
    """Which id pads changes no weight: a pad_token mismatch merges with a warning; eos still refuses."""
    padded = _with_special_token(instruct, tmp_path / "other-pad", "pad_token")
    run = merge_run.main(merge_config(tmp_path / "out", sft_run, f"models.0.path={padded}", "models.0.tiny_seed=null"))
    err = capsys.readouterr().err
    assert "kofin merge: warning:" in err and "differ in pad_token" in err and "merging anyway" in err
    warnings = require_complete(run, "merge")["metrics"]["compatibility"]["warnings"]
    assert len(warnings) == 1 and "pad_token" in warnings[0]
    eos = _with_special_token(instruct, tmp_path / "other-eos", "eos_token")
    with pytest.raises(MergeInputError, match=r"differ in special token eos_token"):
        merge_run.main(merge_config(tmp_path / "out2", sft_run, f"models.0.path={eos}", "models.0.tiny_seed=null"))
