"""`matrix:` sweeps: one step per arm with its own run directory, skipped on rerun, and the eval step that
compares the arms writes FinLoRA's table (every arm x task cell, cost columns, the base first).

The sweep here varies the tiny stage (four tiny models build in seconds on CPU); the real study's SFT arms are
checked by dry-running configs/pipeline/finlora_study_{tiny,eeve}.yaml, which validates every arm's config."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ["tiny-seed1-num_hidden_layers1", "tiny-seed1-num_hidden_layers2", "tiny-seed2-num_hidden_layers1",
        "tiny-seed2-num_hidden_layers2"]  # fmt: skip
TASKS = ["fin_headline", "fin_xbrl_extraction"]


def kofin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofin.cli", *args], capture_output=True, text=True, cwd=ROOT)


def statuses(res: subprocess.CompletedProcess) -> dict[str, str]:
    assert res.returncode == 0, res.stderr + res.stdout
    lines = res.stdout.splitlines()
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("kofin pipeline:")) + 1 :]
    return {line.split()[0]: line.split()[1] for line in rows if line.strip()}


def write_study(tmp_path: Path) -> Path:
    (tmp_path / "tiny.yaml").write_text(
        "output_dir: runs/tiny\nhidden_size: 64\nintermediate_size: 224\nnum_attention_heads: 2\nvocab_size: 1024\n",
        encoding="utf-8",
    )
    (tmp_path / "eval.yaml").write_text(
        "output_dir: runs/eval\nmodels: [{name: base, path: null, base: true}]\n"
        f"tasks: [{', '.join(TASKS)}]\nlimit: 2\nbatch_size: 2\ncpu_threads: 1\nbootstrap_resamples: 20\n",
        encoding="utf-8",
    )
    (tmp_path / "pipeline.yaml").write_text(
        "stages:\n  - stage: tiny\n    config: tiny.yaml\n    matrix:\n      seed: [1, 2]\n"
        "      num_hidden_layers: [1, 2]\n  - stage: eval\n    config: eval.yaml\n    compare: [tiny]\n",
        encoding="utf-8",
    )
    return tmp_path / "pipeline.yaml"


def test_a_sweep_runs_every_arm_skips_them_on_rerun_and_tabulates_them(tmp_path):
    pipeline = write_study(tmp_path)
    runs = tmp_path / "runs"
    assert statuses(kofin("pipeline", "--config", str(pipeline), "--quiet")) == {
        **dict.fromkeys(ARMS, "ran"),
        "eval": "ran",
    }
    for arm in ARMS:  # each arm its own run directory, named from its values
        assert (runs / f"tiny-{arm.removeprefix('tiny-')}" / "COMPLETE").exists()
    assert not (runs / "tiny").exists()

    with open(runs / "eval" / "finlora_table.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["base", *ARMS]  # the base first, then the arms in matrix order
    for row in table:
        for task in TASKS:
            assert row[f"{task}.acc"] != ""  # every arm x task cell
        assert row["fin_headline.f1"] != "" and row["fin_xbrl_extraction.f1"] != ""
        assert float(row["latency_s_per_example"]) > 0
        if row["model"] != "base":
            assert row["fin_headline.acc.p_vs_base"] != ""  # significance vs the base
            assert float(row["train_wall_time_s"]) > 0 and row["peak_memory_of"] == "RSS"
            assert float(row["peak_memory_gib"]) > 0 and row["gpu_hours"] == ""  # CPU: no GPU-hours to claim
    md = (runs / "eval" / "finlora_table.md").read_text(encoding="utf-8")
    assert md.splitlines()[0].startswith("| 모델 | 방법 |") and "추론 지연(초/예제)" in md
    assert "## 방법 비교 (FinLoRA 표)" in (runs / "eval" / "report.md").read_text(encoding="utf-8")

    res = kofin("pipeline", "--config", str(pipeline), "--quiet")
    assert statuses(res) == {**dict.fromkeys(ARMS, "skipped"), "eval": "skipped"}
    # One arm forced: the others and the eval (same inputs, deterministic build) stay up to date.
    res = kofin("pipeline", "--config", str(pipeline), "--force", ARMS[0], "--quiet")
    assert statuses(res) == {ARMS[0]: "ran", **dict.fromkeys(ARMS[1:], "skipped"), "eval": "skipped"}


def test_a_bad_matrix_key_is_named_before_anything_runs(tmp_path):
    pipeline = write_study(tmp_path)
    pipeline.write_text(pipeline.read_text(encoding="utf-8").replace("seed:", "sede:"), encoding="utf-8")
    res = kofin("pipeline", "--config", str(pipeline))
    assert res.returncode == 2
    assert "step 'tiny': matrix key 'sede' is no config key of TinyConfig" in res.stderr and "seed" in res.stderr
    pipeline.write_text(
        pipeline.read_text(encoding="utf-8").replace("sede: [1, 2]", "output_dir: [a, b]"), encoding="utf-8"
    )
    res = kofin("pipeline", "--config", str(pipeline))
    assert res.returncode == 2 and "matrix key 'output_dir' cannot be swept" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_the_shipped_studies_expand_and_validate_every_arm():
    from kofin.config import load_config
    from kofin.pipeline import PipelineConfig, plan

    tiny = ROOT / "configs" / "pipeline" / "finlora_study_tiny.yaml"
    steps = plan(load_config(PipelineConfig, tiny), tiny)
    assert [s.label for s in steps] == [
        "data", "sft-lora", "sft-qlora", "sft-dora", "sft-rslora", "sft-dora-maglr", "fedlora", "eval",
    ]  # fmt: skip
    assert [s.cfg.method for s in steps[1:6]] == ["lora", "qlora", "dora", "rslora", "dora"]
    assert steps[5].cfg.training.dora_magnitude_lr == 0.01
    assert len({s.output_dir for s in steps}) == len(steps)
    evaluated = [m.name for m in steps[-1].cfg.models]
    assert evaluated == ["base", "sft-lora", "sft-qlora", "sft-dora", "sft-rslora", "sft-dora-maglr", "fedlora"]
    assert [m.path for m in steps[-1].cfg.models[1:]] == [s.output_dir for s in steps[1:7]]

    eeve = ROOT / "configs" / "pipeline" / "finlora_study_eeve.yaml"
    steps = plan(load_config(PipelineConfig, eeve), eeve)
    arms = [s for s in steps if s.step.matrix]
    assert len(arms) == 8 and {(s.cfg.method, s.cfg.lora.r) for s in arms} == {
        (m, r) for m in ("lora", "qlora", "dora", "rslora") for r in (8, 64)
    }
    assert len(steps[-1].cfg.models) == 1 + 8 + 1 + 1  # base, the sweep, DoRA with its fix, federated
    res = kofin("pipeline", "--config", str(eeve), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "sft-qlora-r64" in res.stdout and "would run" in res.stdout
