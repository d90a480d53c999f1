"""`kofin eval` end to end on the tiny model: the run directory, metrics from records, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kofin.config import ConfigError, load_config
from kofin.eval import scoring
from kofin.eval.adapters import AdapterRunError
from kofin.eval.config import EvalConfig
from kofin.eval.run import forgetting_deltas, main
from kofin.eval.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["fin_mcq_kmmlu", "general_gsm8k_ko"]


def _cfg(out: Path, *extra: str) -> EvalConfig:
    return load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "tiny.yaml",
        [
            f"output_dir={out}",
            f"tasks={json.dumps(TASKS)}",
            "limit=2",
            "batch_size=4",
            "cpu_threads=1",
            "report=false",
            *extra,
        ],
    )


@pytest.fixture
def count_scored(monkeypatch):
    """How many examples each task sends to the model (wraps the real scorer)."""
    counts: dict[str, int] = {}
    real = scoring.score_examples

    def counting(spec, examples, backend, progress=None, **kw):
        counts[spec.name] = counts.get(spec.name, 0) + len(examples)
        return real(spec, examples, backend, progress, **kw)

    monkeypatch.setattr(scoring, "score_examples", counting)
    return counts


def _records(out: Path, task: str) -> list[dict]:
    return [
        json.loads(line)
        for line in (out / "records" / "tiny" / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def test_run_directory_metrics_and_resume(tmp_path, count_scored):
    out = tmp_path / "eval"
    assert main(_cfg(out)) == out
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "COMPLETE",
        "config.yaml",
        "manifest.json",
        "metrics.json",
        "records/tiny/fin_mcq_kmmlu.jsonl",
        "records/tiny/general_gsm8k_ko.jsonl",
        "records/tiny/model.json",
    ]
    assert count_scored == {"fin_mcq_kmmlu": 2, "general_gsm8k_ko": 2}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    mcq = _records(out, "fin_mcq_kmmlu")
    assert [r["id"] for r in mcq] == ["kmmlu_finance.csv:2", "kmmlu_finance.csv:3"]
    got = metrics["results"]["tiny"]["fin_mcq_kmmlu"]
    assert got["acc"] == sum(r["pred_ll"] == r["gold"] for r in mcq) / 2
    assert got["acc_norm"] == sum(r["pred_ll_norm"] == r["gold"] for r in mcq) / 2
    gsm = _records(out, "general_gsm8k_ko")
    assert [r["gold"] for r in gsm] == ["7", "4800"]
    assert metrics["results"]["tiny"]["general_gsm8k_ko"]["exact_match"] == sum(r["exact_match"] for r in gsm) / 2
    assert metrics["tasks"]["general_gsm8k_ko"]["group"] == "general" and metrics["forgetting"] == {}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "eval" and manifest["metrics"] == {"examples_scored": 4, "examples_reused": 0}
    assert "model_tiny" in manifest["inputs"]  # the tiny model is a kofin run directory

    # A larger limit scores only the new examples; the old records are kept as they were.
    count_scored.clear()
    main(_cfg(out, "limit=3"))
    assert count_scored == {"fin_mcq_kmmlu": 1, "general_gsm8k_ko": 1}
    again = _records(out, "fin_mcq_kmmlu")
    assert again[:2] == mcq and len(again) == 3
    # Same config once more: nothing is scored.
    count_scored.clear()
    main(_cfg(out, "limit=3"))
    assert count_scored == {}


def test_a_killed_run_resumes_from_its_partial_records(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    real = scoring.score_examples
    calls: list[str] = []

    def dies_on_second_task(spec, examples, backend, progress=None, **kw):
        calls.append(spec.name)
        if spec.name == "general_gsm8k_ko":
            raise KeyboardInterrupt
        return real(spec, examples, backend, progress, **kw)

    monkeypatch.setattr(scoring, "score_examples", dies_on_second_task)
    with pytest.raises(KeyboardInterrupt):
        main(_cfg(out))
    assert not out.exists()
    partial = Path(f"{out}.partial")
    assert len((partial / "records" / "tiny" / "fin_mcq_kmmlu.jsonl").read_text().splitlines()) == 2

    calls.clear()
    monkeypatch.setattr(scoring, "score_examples", lambda *a, **k: (calls.append(a[0].name), real(*a, **k))[1])
    main(_cfg(out))
    assert calls == ["general_gsm8k_ko"]
    assert (out / "COMPLETE").exists() and not partial.exists()


def test_forgetting_deltas_by_hand():
    results = {
        "base": {"general_mcq_ko": {"acc": 0.5}, "fin": {"acc": 0.2}},
        "sft": {"general_mcq_ko": {"acc": 0.25}, "fin": {"acc": 0.6}},
        "dpo": {"general_mcq_ko": {"acc": 0.75}, "fin": {"acc": 0.7}},
    }
    assert forgetting_deltas(results, "base", ["general_mcq_ko"]) == {
        "sft": {"general_mcq_ko": {"acc": -0.25}},
        "dpo": {"general_mcq_ko": {"acc": 0.25}},
    }


def test_config_and_model_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"model names must be unique; \['a'\]"):
        load_config(EvalConfig, None, [f"output_dir={tmp_path}/o", "models=[{name: a}, {name: a}]"])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cfg = load_config(
        EvalConfig,
        None,
        [f"output_dir={tmp_path}/o", f"models=[{{name: sft, path: {adapter}}}]", "tasks=[fin_mcq_kmmlu]"],
    )
    with pytest.raises(AdapterRunError, match=r"models\[sft\].path: .* has adapter_config.json but no adapter weights"):
        main(cfg)
    cfg = load_config(EvalConfig, None, [f"output_dir={tmp_path}/o", "models=[{name: t}]", "tasks=[fin_mcq_kmmlux]"])
    with pytest.raises(Exception, match="unknown task 'fin_mcq_kmmlux'"):
        main(cfg)
    assert load_task("fin_sentiment").max_new_tokens == 8 and load_task("fin_numeric_qa").max_new_tokens == 24


def test_kofin_eval_command(tmp_path, capsys):
    from kofin.cli import main as kofin

    out = tmp_path / "cli"
    rc = kofin(
        [
            "eval",
            "--config",
            str(ROOT / "configs" / "eval" / "tiny.yaml"),
            f"output_dir={out}",
            "tasks=[fin_sentiment]",
            "limit=3",
            "report=false",
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["results"]["tiny"]["fin_sentiment"]
    assert set(metrics) == {"acc", "acc_norm", "acc_gen", "weighted_f1", "weighted_f1_gen"}
    assert f"weighted_f1 {metrics['weighted_f1']:.3f}" in printed.out and f"wrote {out}" in printed.out
    with pytest.raises(SystemExit) as exit_:
        kofin(["eval", "--config", str(ROOT / "configs" / "eval" / "tiny.yaml"), "batch_sise=2"])
    assert exit_.value.code == 2
    assert "batch_sise: unknown key; did you mean 'batch_size'?" in capsys.readouterr().err


def test_bertscore_is_added_when_an_encoder_is_configured(tmp_path, tiny_model):
    out = tmp_path / "bert"
    main(_cfg(out, "tasks=[general_gsm8k_ko]"))  # first without an encoder
    assert "bertscore_f1" not in json.loads((out / "metrics.json").read_text())["results"]["tiny"]["general_gsm8k_ko"]
    main(_cfg(out, "tasks=[general_gsm8k_ko]", f"bertscore_encoder={tiny_model}"))  # resumed records get theirs
    got = json.loads((out / "metrics.json").read_text())["results"]["tiny"]["general_gsm8k_ko"]["bertscore_f1"]
    records = _records(out, "general_gsm8k_ko")
    assert got == pytest.approx(sum(r["bertscore_f1"] for r in records) / 2, abs=1e-6)
    assert 0 <= got <= 1


def test_training_cost_recorded_or_estimated_from_the_manifest():
    from kofin.eval.config import GpuPrice
    from kofin.eval.run import training_cost

    sft = {
        "stage": "sft",
        "wall_time_s": 4000.0,
        "peak_gpu_mb": None,
        "peak_rss_mb": {"self": 2048.0, "children": 3072.0},
        "metrics": {
            "method": "qlora",
            "gpu_hours": 8.0,
            "tokens_per_s": 900.0,
            "peak_gpu_memory_gib_rank0": 26.1,
            "cost": {"amount": 64.0, "currency": "USD", "gpu_hour_price": 8.0},
        },
    }
    assert training_cost(sft, GpuPrice(gpu_hour_price=1.0)) == {
        "stage": "sft",
        "wall_time_s": 4000.0,
        "method": "qlora",
        "gpu_hours": 8.0,
        "cost": "64.0 USD",
        "tokens_per_s": 900.0,
        "peak_gpu_memory_gib_rank0": 26.1,
        "peak_rss_gib": 3.0,
    }  # the recorded cost wins over the eval's price
    # kofin dpo runs in-process: wall time and per-device peak memory only. Two GPUs held memory for 1.5 h.
    dpo = {
        "stage": "dpo",
        "wall_time_s": 5400.0,
        "peak_gpu_mb": {"cuda:0": 20480.0, "cuda:1": 10240.0, "cuda:2": 0.0},
        "peak_rss_mb": {"self": 1024.0, "children": 0.0},
        "metrics": {"tokens_per_s": 300.0},
    }
    row = training_cost(dpo, GpuPrice(gpu_hour_price=8.0, currency="USD"))
    assert row == {
        "stage": "dpo",
        "wall_time_s": 5400.0,
        "tokens_per_s": 300.0,
        "peak_gpu_memory_gib": 20.0,
        "peak_rss_gib": 1.0,
        "gpu_hours": 3.0,
        "gpu_hours_estimated": True,
        "cost": "24.0 USD (est.)",
    }
    assert "cost" not in training_cost(dpo)  # no price configured: no cost invented
    # An unpriced SFT launch (gpu_hour_price 0) records amount 0: priced by the eval config, as an estimate.
    unpriced = {**sft, "metrics": {**sft["metrics"], "cost": {"amount": 0.0, "currency": "USD", "gpu_hour_price": 0.0}}}
    assert training_cost(unpriced, GpuPrice(gpu_hour_price=2.0, currency="KRW"))["cost"] == "16.0 KRW (est.)"


def test_every_cell_has_an_interval_and_the_tiny_model_against_itself_is_no_difference(tmp_path):
    out = tmp_path / "self"
    models = "[{name: base, base: true}, {name: again}]"  # the same embedded tiny model twice
    main(_cfg(out, f"models={models}", "limit=3", "bootstrap_resamples=50"))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for model in ("base", "again"):
        for task in TASKS:
            cells = metrics["intervals"][model][task]
            assert set(cells) == set(metrics["results"][model][task])  # every metric of every cell
            for name, cell in cells.items():
                assert cell["n"] == 3 and cell["low"] <= cell["value"] <= cell["high"]
                assert cell["value"] == pytest.approx(metrics["results"][model][task][name], abs=1e-6)
    acc = metrics["intervals"]["base"]["fin_mcq_kmmlu"]["acc"]
    assert (
        acc["method"] == "wilson"
        and metrics["intervals"]["base"]["general_gsm8k_ko"]["token_f1"]["method"] == "bootstrap"
    )
    # Same weights, same greedy answers: zero difference, p = 1, not significant, on every metric.
    for task in TASKS:
        for name, test in metrics["comparisons"]["again"][task].items():
            assert (test["diff"], test["p_value"], test["significant"], test["n"]) == (0.0, 1.0, False, 3), (task, name)
    assert metrics["comparisons"]["again"]["fin_mcq_kmmlu"]["acc"]["test"] == "mcnemar"
    assert metrics["verdict"]["again"] | {"cost": None} == {"better": 0, "worse": 0, "no_difference": 2, "cost": None}
    # A rerun from the kept records gives the same intervals to the last digit (seeded resampling).
    (out / "COMPLETE").unlink()
    import shutil

    shutil.move(out, f"{out}.partial")
    main(_cfg(out, f"models={models}", "limit=3", "bootstrap_resamples=50"))
    again = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert again["intervals"] == metrics["intervals"] and again["comparisons"] == metrics["comparisons"]


def test_model_cost_sums_the_lineage_behind_a_model(tmp_path):
    """A DPO run on top of an SFT run: the DPO model cost both (recorded SFT cost + estimated DPO GPU-hours x price)."""
    from kofin.eval.config import GpuPrice
    from kofin.eval.cost import model_cost
    from kofin.rundir import open_run, require_complete

    with open_run("sft", {"output_dir": str(tmp_path / "sft")}) as run:
        run.metrics.update(
            method="qlora", world_size=8, gpu_hours=8.0, cost={"amount": 64.0, "currency": "USD", "gpu_hour_price": 8.0}
        )
    sft = tmp_path / "sft"
    with open_run("dpo", {"output_dir": str(tmp_path / "dpo")}, inputs={"sft_run": sft}) as run:
        run.metrics.update(tokens_per_s=300.0)
    dpo = require_complete(tmp_path / "dpo")
    dpo["peak_gpu_mb"], dpo["wall_time_s"] = {"cuda:0": 20480.0, "cuda:1": 10240.0}, 5400.0  # two GPUs for 1.5 h
    got = model_cost(dpo, GpuPrice(gpu_hour_price=8.0, currency="USD"))
    assert got == {"gpu_hours": 11.0, "cost": 88.0, "currency": "USD", "estimated": True, "stages": ["sft", "dpo"]}
    # Without a price the DPO GPU-hours cannot be priced: the sum is unknown, not the SFT cost alone.
    assert model_cost(dpo)["cost"] is None and model_cost(dpo)["gpu_hours"] == 11.0
    # The base model (no run manifest) is the starting point: nothing spent.
    assert model_cost(None) == {"gpu_hours": 0.0, "cost": None, "currency": None, "estimated": False, "stages": []}
    # Sums across currencies mean nothing.
    krw = GpuPrice(gpu_hour_price=10000.0, currency="KRW")
    assert model_cost(dpo, krw)["cost"] is None


def test_a_quiet_run_is_the_same_run_for_the_pipeline(tmp_path):
    """--quiet is how a run is shown, not what it computes: the config digest `kofin eval --quiet`
    records is the one `kofin pipeline` computes from the YAML, so the pipeline finds it up to date."""
    from kofin.cli import main as kofin
    from kofin.rundir import config_digest, require_complete

    overrides = [
        f"output_dir={tmp_path / 'eval'}",
        f"tasks={json.dumps(TASKS)}",
        "limit=2",
        "batch_size=4",
        "cpu_threads=1",
        "report=false",
    ]
    assert kofin(["eval", "--config", str(ROOT / "configs" / "eval" / "tiny.yaml"), "--quiet", *overrides]) == 0
    cfg = load_config(EvalConfig, ROOT / "configs" / "eval" / "tiny.yaml", overrides)
    assert require_complete(tmp_path / "eval")["config_sha256"] == config_digest(cfg.model_dump(mode="json"))
