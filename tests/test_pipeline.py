"""`kofin pipeline`: stages in order, finished ones skipped, changes re-run what depends on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def kofin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofin.cli", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture
def pipeline(tmp_path) -> Path:
    """tiny (a 1-layer model on a pinned corpus) -> data (SFT/DPO data tokenised with it)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text(
        "---\ntitle: 예시\n---\n# 예시\n" + "정기예금은 1년 만기 상품입니다. 예금자보호 한도는 1억원입니다.\n" * 40,
        encoding="utf-8",
    )
    (tmp_path / "tiny.yaml").write_text(
        "output_dir: runs/tiny\ncorpus: corpus\nnum_hidden_layers: 1\nhidden_size: 64\nintermediate_size: 224\n"
        "num_attention_heads: 2\nvocab_size: 1024\n",
        encoding="utf-8",
    )
    (tmp_path / "pipeline.yaml").write_text(
        "stages:\n"
        "  - stage: tiny\n    config: tiny.yaml\n"
        f"  - stage: data\n    config: {ROOT / 'configs/data/tiny.yaml'}\n"
        "    set:\n      output_dir: runs/data\n      validate.tokenizer: runs/tiny\n"
        "      sft.documents.0.max_documents: 3\n      dpo.documents.0.max_documents: 3\n",
        encoding="utf-8",
    )
    return tmp_path / "pipeline.yaml"


def statuses(res: subprocess.CompletedProcess) -> dict[str, str]:
    assert res.returncode == 0, res.stderr + res.stdout
    lines = res.stdout.splitlines()
    rows = lines[next(i for i, line in enumerate(lines) if line.startswith("kofin pipeline:")) + 1 :]
    return {line.split()[0]: line.split()[1] for line in rows if line.strip()}


def created(run: Path) -> str:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))["created"] + (run / "COMPLETE").read_text()


def test_runs_in_order_then_skips_then_reruns_what_a_change_reaches(pipeline):
    runs = pipeline.parent / "runs"
    assert statuses(kofin("pipeline", "--config", str(pipeline), "--quiet")) == {"tiny": "ran", "data": "ran"}
    data_manifest = json.loads((runs / "data" / "manifest.json").read_text(encoding="utf-8"))
    assert data_manifest["inputs"]["tokenizer"]["path"] == str(
        runs / "tiny"
    )  # `set:` path resolved against the pipeline file
    before = {name: created(runs / name) for name in ("tiny", "data")}

    # Nothing changed: nothing runs, nothing is rewritten.
    assert statuses(kofin("pipeline", "--config", str(pipeline))) == {"tiny": "skipped", "data": "skipped"}
    assert {name: created(runs / name) for name in ("tiny", "data")} == before

    # Forcing a deterministic step rebuilds it with identical outputs: the step after it is still up to date.
    assert statuses(kofin("pipeline", "--config", str(pipeline), "--force", "tiny")) == {
        "tiny": "ran",
        "data": "skipped",
    }
    assert created(runs / "data") == before["data"]

    # A changed config (new seed, so new weights) re-runs that step, and the one whose input it is.
    res = kofin("pipeline", "--config", str(pipeline), "tiny.seed=1")
    assert statuses(res) == {"tiny": "ran", "data": "ran"}
    assert "config changed" in res.stdout and "input tokenizer changed" in res.stdout


def test_dry_run_validates_every_step_and_writes_nothing(pipeline):
    res = kofin("pipeline", "--config", str(pipeline), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "would run (no complete run yet)" in res.stdout
    assert not (pipeline.parent / "runs").exists()


def test_a_bad_step_config_stops_before_any_step_runs(pipeline):
    text = pipeline.read_text(encoding="utf-8").replace(
        "max_documents: 3\n", "max_documents: 3\n      validate.max_seq_lenn: 9\n", 1
    )
    pipeline.write_text(text, encoding="utf-8")
    res = kofin("pipeline", "--config", str(pipeline))
    assert res.returncode == 2
    assert "step 'data'" in res.stderr and "max_seq_lenn" in res.stderr
    assert not (pipeline.parent / "runs").exists()  # the tiny step did not run either


def test_overrides_and_force_name_an_existing_step(pipeline):
    res = kofin("pipeline", "--config", str(pipeline), "sfт.training.max_steps=5")
    assert res.returncode == 1 and "start it with a step name (tiny, data)" in res.stderr
    res = kofin("pipeline", "--config", str(pipeline), "--force", "merge")
    assert res.returncode == 1 and "--force merge: no such step" in res.stderr


def test_the_shipped_pipeline_validates(tmp_path):
    """configs/pipeline/tiny.yaml: every step's config loads (checked without running anything)."""
    from kofin.config import load_config
    from kofin.pipeline import PipelineConfig, plan

    source = ROOT / "configs" / "pipeline" / "tiny.yaml"
    steps = plan(load_config(PipelineConfig, source), source)
    assert [s.step.stage for s in steps] == ["data", "sft", "dpo", "merge", "eval"]
