"""The one stage record (kofin/stages.py): one `main(cfg, *, quiet=False)` per stage, the CLI built from
the record, display flags out of configs, and a stage run by hand that the pipeline then finds up to date."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kofin.config import describe_fields
from kofin.stages import STAGES, load_target, stage_config_model, stage_main

ROOT = Path(__file__).resolve().parents[1]
DISPLAY_FLAGS = {"quiet", "progress", "echo", "verbose", "show_progress"}


def kofin(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofin.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_main_has_the_one_signature(name):
    params = list(inspect.signature(stage_main(name)).parameters.values())
    assert params[0].name == "cfg" and params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    quiet = next(p for p in params if p.name == "quiet")
    assert quiet.kind is inspect.Parameter.KEYWORD_ONLY and quiet.default is False
    # Anything else is an older keyword kept for existing callers: keyword-only, with a default.
    for extra in params[1:]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not inspect.Parameter.empty, extra


@pytest.mark.parametrize("name", list(STAGES))
def test_the_cli_and_the_pipeline_read_the_same_record(name):
    from kofin.cli import COMMANDS

    record = STAGES[name]
    assert COMMANDS[name].module == record.cli and COMMANDS[name].config == record.config
    assert callable(load_target(record.cli))
    model = stage_config_model(name)
    assert "output_dir" in model.model_fields  # every stage writes one run directory
    # Display flags are arguments of main, never config fields: a config's digest must not depend on them.
    keys = {key.rsplit(".", 1)[-1] for key, _, _ in describe_fields(model)}
    assert not keys & DISPLAY_FLAGS, f"{name}'s config has display flags {keys & DISPLAY_FLAGS}"


def test_a_pipeline_step_names_a_known_stage(tmp_path):
    (tmp_path / "p.yaml").write_text("stages:\n  - stage: sfft\n    config: x.yaml\n", encoding="utf-8")
    res = kofin("pipeline", "--config", str(tmp_path / "p.yaml"), "--dry-run")
    assert res.returncode == 2
    assert "stages.0.stage" in res.stderr and "unknown stage 'sfft'" in res.stderr
    assert "tiny, data, sft, fedlora, dpo, merge, ingest, eval" in res.stderr


def test_stages_run_by_hand_with_quiet_are_up_to_date_for_the_pipeline(tmp_path):
    """tiny, data and eval run by hand (data and eval with --quiet), then the pipeline over the same
    configs: every step is skipped, none re-runs as "config changed" (make demo's flow)."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.md").write_text(
        "---\ntitle: 예시\n---\n# 예시\n" + "정기예금은 1년 만기 상품입니다. 예금자보호 한도는 1억원입니다.\n" * 40,
        encoding="utf-8",
    )
    shape = ["num_hidden_layers=1", "hidden_size=64", "intermediate_size=224", "num_attention_heads=2"]
    (tmp_path / "tiny.yaml").write_text(
        "output_dir: runs/tiny\ncorpus: corpus\n"
        + "".join(s.replace("=", ": ") + "\n" for s in shape)
        + "vocab_size: 1024\n",
        encoding="utf-8",
    )
    data = [
        "output_dir=runs/data",
        "validate.tokenizer=runs/tiny",
        "sft.documents.0.max_documents=2",
        "dpo.documents.0.max_documents=2",
    ]
    (tmp_path / "data.yaml").write_text(
        (ROOT / "configs/data/tiny.yaml").read_text(encoding="utf-8").replace("../../", str(ROOT) + "/"),
        encoding="utf-8",
    )
    evals = ["output_dir=runs/eval", "models=[{name: tiny, path: runs/tiny, base: true}]", "tasks=[fin_headline]"]
    evals += ["limit=2", "batch_size=2", "cpu_threads=1", "report=false"]
    (tmp_path / "eval.yaml").write_text("".join(e.replace("=", ": ", 1) + "\n" for e in evals), encoding="utf-8")
    (tmp_path / "pipeline.yaml").write_text(
        "stages:\n  - stage: tiny\n    config: tiny.yaml\n"
        "  - stage: data\n    config: data.yaml\n    set:\n"
        + "".join(f"      {d.split('=')[0]}: {d.split('=')[1]}\n" for d in data)
        + "  - stage: eval\n    config: eval.yaml\n",
        encoding="utf-8",
    )
    # By hand, from the folder the configs are in (command-line paths are relative to where one stands).
    res = kofin("tiny", "build", "runs/tiny", "corpus=corpus", *shape, "vocab_size=1024", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (res := kofin("data", "build", "--config", "data.yaml", "--quiet", *data, cwd=tmp_path)).returncode == 0, (
        res.stderr
    )
    assert (res := kofin("eval", "--config", "eval.yaml", "--quiet", cwd=tmp_path)).returncode == 0, res.stderr

    res = kofin("pipeline", "--config", str(tmp_path / "pipeline.yaml"), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "config changed" not in res.stdout
    summary = res.stdout.splitlines()[-3:]
    assert [line.split()[:2] for line in summary] == [["tiny", "skipped"], ["data", "skipped"], ["eval", "skipped"]]
    manifest = json.loads((tmp_path / "runs/eval/manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "eval"
