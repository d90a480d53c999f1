"""The data stage end to end: config, `main(cfg)` on the tiny config, the CLI, failure safety."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kofin.config import ConfigError, load_config
from kofin.data_ko.build_sft import source_group
from kofin.data_ko.cli import run_cli
from kofin.data_ko.config import DataConfig
from kofin.data_ko.formats import DataInputError
from kofin.data_ko.run import main
from kofin.data_ko.validate import check_preference_row, check_sft_row

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "data" / "tiny.yaml"
LAWS_CONFIG = ROOT / "configs" / "data" / "laws.yaml"
RUN_FILES = {
    "sft/train.jsonl",
    "sft/eval.jsonl",
    "sft/raw_text.jsonl",
    "dpo/train.jsonl",
    "dpo/eval.jsonl",
    "report.json",
    "config.yaml",
    "manifest.json",
    "COMPLETE",
}


def files_of(run: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    """The tiny config on four knowledge-base documents: the same code paths, a quarter of the time."""
    data = load_config(DataConfig, TINY).model_dump(mode="json")
    for part in ("sft", "dpo"):
        data[part]["documents"][0]["max_documents"] = 4
    path = tmp_path_factory.mktemp("configs") / "small.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    return main(load_config(DataConfig, TINY, [f"output_dir={out}"]), quiet=True)


# ---------------------------------------------------------------- config


def test_shipped_configs_load_with_absolute_paths():
    tiny = load_config(DataConfig, TINY)
    assert tiny.output_dir == ROOT / "runs" / "data-tiny"
    assert tiny.sft.instructions[0].path == ROOT / "data_ko" / "examples" / "instructions_alpaca.jsonl"
    assert tiny.sft.documents[0].path is None and tiny.validate.tokenizer is None
    laws = load_config(DataConfig, LAWS_CONFIG)
    assert laws.sft.documents[0].path == ROOT.parent / "shared" / "data" / "laws" / "fin_articles.jsonl"


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (
            ["sft.reading_comprehension.min_passage_chars=2000"],
            "min_passage_chars (2000) must be below max_passage_chars (1200)",
        ),
        (["sft=null", "dpo=null"], "nothing to build: sft and dpo are both null"),
        (
            ["dpo.sources=[]", "dpo.from_documents=false"],
            "no input: list preference files under sources or set from_documents: true",
        ),
        (["validate.eval_fraction=0.5"], "validate.eval_fraction: must be < 0.5"),
        (["validate.near_dup_threshold=0"], "validate.near_dup_threshold: must be > 0"),
        (["validate.too_long=truncate"], "validate.too_long: must be one of 'drop' or 'error'"),
        (["sft.reading_comprehension.tasks=[qa, quiz]"], "sft.reading_comprehension.tasks.1: must be one of"),
    ],
)
def test_config_problems_say_what_to_fix(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(DataConfig, TINY, overrides)
    assert expected in str(err.value)


def test_unknown_key_gets_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\nvalidate:\n  max_seq_lenn: 5\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml:3  validate\.max_seq_lenn: unknown key; did you mean 'max_seq_len'\?"
    ):
        load_config(DataConfig, bad)


# ---------------------------------------------------------------- main(cfg) on the tiny config


def test_tiny_build_writes_exactly_the_run_files(tiny_run, tiny_model):
    assert set(files_of(tiny_run)) == RUN_FILES
    assert not tiny_run.with_name(tiny_run.name + ".partial").exists()
    manifest = json.loads((tiny_run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "data"
    assert set(manifest["outputs"]) == RUN_FILES - {"manifest.json", "COMPLETE"}
    assert {"sft.documents.0", "sft.instructions.2", "dpo.sources.0", "dpo.documents.0", "tokenizer"} <= set(
        manifest["inputs"]
    )
    rows = manifest["metrics"]["rows"]
    for name, count in rows.items():
        assert count == len(read_jsonl(tiny_run / name)) and count > 0, name
    report = json.loads((tiny_run / "report.json").read_text(encoding="utf-8"))
    assert report["tokenizer"] == str(tiny_model)  # validate.tokenizer: null means the tiny model


def test_tiny_sft_rows(tiny_run):
    train, evals = read_jsonl(tiny_run / "sft/train.jsonl"), read_jsonl(tiny_run / "sft/eval.jsonl")
    for row in train + evals:
        assert check_sft_row(row) == [], row["source"]
        assert row["messages"][0]["role"] == "system"
    rc = [r for r in train if r["task"] == "reading_comprehension"]
    assert rc and all(r["source"].startswith("kb:") and "#" in r["source"] for r in rc)
    assert {t for r in rc for t in r["rc_tasks"]} == {"summarize", "title", "qa", "fill_in", "keywords"}
    sources = {r["source"] for r in train + evals}
    assert {f"instructions_{f}.jsonl:{i}" for f in ("alpaca", "sharegpt", "openai") for i in range(1, 9)} <= sources
    memo = next(r for r in train + evals if r["source"] == "instructions_alpaca.jsonl:5")
    assert "[전화번호]" in memo["messages"][1]["content"] and "[계좌번호]" in memo["messages"][1]["content"]
    assert "010-2345-6789" not in (tiny_run / "sft/train.jsonl").read_text(encoding="utf-8")
    train_docs = {source_group(r["source"]) for r in train}
    eval_docs = {source_group(r["source"]) for r in evals}
    assert eval_docs and train_docs.isdisjoint(eval_docs)
    raw = read_jsonl(tiny_run / "sft/raw_text.jsonl")
    assert raw and {source_group(r["source"]) for r in raw} <= train_docs
    assert all(set(r) == {"text", "source"} for r in raw)


def test_tiny_dpo_rows(tiny_run):
    rows = read_jsonl(tiny_run / "dpo/train.jsonl") + read_jsonl(tiny_run / "dpo/eval.jsonl")
    for row in rows:
        assert check_preference_row(row) == [], row["source"]
    user_pairs = [r for r in rows if r["task"] == "preference"]
    assert len(user_pairs) == 12
    multi = [r for r in user_pairs if [m["role"] for m in r["prompt"]][-3:] == ["user", "assistant", "user"]]
    assert len(multi) == 3
    grounded = [r for r in rows if r["task"] == "grounded_citation"]
    assert {r["rejected_kind"] for r in grounded} == {"changed_number", "other_passage"}
    for row in grounded:
        context = row["prompt"][-1]["content"]
        assert claim(row["chosen"][0]["content"]) in context, row["source"]
        assert claim(row["rejected"][0]["content"]) not in context, row["source"]
        assert row["chosen"][0]["content"].split("\n")[0].endswith(" [1]")
        assert ("[1]" in row["rejected"][0]["content"]) == (row["rejected_kind"] == "changed_number")


def claim(answer: str) -> str:
    """The part of an answer that must (or must not) be in the context: the sentence before the
    citation, or for a table answer ("표에 따르면 X는 'V'입니다.") the cell value V."""
    text = answer.split(" [1]")[0]
    return text.split("'")[1] if text.startswith("표에 따르면") else text


def test_build_is_deterministic(tiny_run, tmp_path):
    again = main(load_config(DataConfig, TINY, [f"output_dir={tmp_path / 'again'}"]), quiet=True)
    first, second = files_of(tiny_run), files_of(again)
    for name in RUN_FILES - {"config.yaml", "manifest.json", "COMPLETE"}:
        assert first[name] == second[name], name


# ---------------------------------------------------------------- CLI


def test_cli_build_runs_in_a_subprocess(tmp_path, small_config):
    out = tmp_path / "cli-run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kofin.cli",
            "data",
            "build",
            "--config",
            str(small_config),
            "--quiet",
            f"output_dir={out}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    assert set(files_of(out)) == RUN_FILES
    # Another process has another hash() salt; the rows must not notice.
    here = main(load_config(DataConfig, small_config, [f"output_dir={tmp_path / 'here'}"]), quiet=True)
    for name in RUN_FILES - {"config.yaml", "manifest.json", "COMPLETE"}:
        assert files_of(out)[name] == files_of(here)[name], name


def test_cli_build_sft_builds_only_sft(tmp_path, small_config):
    out = tmp_path / "sft-only"
    assert run_cli(["build-sft", "--config", str(small_config), f"output_dir={out}", "--quiet"]) == 0
    assert set(files_of(out)) == {
        "sft/train.jsonl",
        "sft/eval.jsonl",
        "sft/raw_text.jsonl",
        "report.json",
        "config.yaml",
        "manifest.json",
        "COMPLETE",
    }
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["config"]["dpo"] is None


def test_cli_help_lists_config_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(["build", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "validate.near_dup_threshold" in out and "sft.reading_comprehension.tasks" in out


# ---------------------------------------------------------------- failures leave the previous run alone


def test_failed_builds_leave_the_previous_run_untouched(tmp_path, small_config, capsys):
    out = tmp_path / "run"
    main(load_config(DataConfig, small_config, [f"output_dir={out}"]), quiet=True)
    before = files_of(out)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "질문", "output": "답"}\n{"instruction": \n', encoding="utf-8")
    cfg = load_config(DataConfig, small_config, [f"output_dir={out}"])
    cfg.sft.instructions[0].path = broken
    with pytest.raises(DataInputError, match=r"broken\.jsonl:2  not valid JSON"):
        main(cfg, quiet=True)
    assert files_of(out) == before
    assert not (out.with_name("run.partial") / "COMPLETE").exists()

    # Too-long rows with too_long=error: exit 1, the rows named, nothing moved.
    code = run_cli(
        [
            "build",
            "--config",
            str(small_config),
            f"output_dir={out}",
            "--quiet",
            "validate.max_seq_len=64",
            "validate.too_long=error",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "exceed validate.max_seq_len=64" in err and "kb:" in err and "tokens)" in err
    assert files_of(out) == before
