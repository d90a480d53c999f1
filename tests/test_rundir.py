"""Run directories: atomic hand-over, a manifest that records the run, COMPLETE written last."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kofin.rundir import COMPLETE, RunDirError, open_run, require_complete, sha256_file


def _cfg(out):
    return {"output_dir": str(out), "lr": 1e-4}


def test_complete_run_has_exact_contents_and_manifest(tmp_path):
    inp = tmp_path / "data.jsonl"
    inp.write_text('{"a": 1}\n')
    out = tmp_path / "run"
    with open_run("demo", _cfg(out), inputs={"data": inp}) as run:
        (run.path / "weights.bin").write_bytes(b"\x01\x02")
        run.metrics["tokens_per_s"] = 123.0
        assert not out.exists(), "nothing may appear at output_dir before the run is complete"
    assert sorted(os.listdir(out)) == ["COMPLETE", "config.yaml", "manifest.json", "weights.bin"]
    m = require_complete(out, "demo")
    assert m["stage"] == "demo"
    assert m["config"] == _cfg(out)
    assert m["inputs"]["data"]["sha256"] == sha256_file(inp)
    assert m["outputs"]["weights.bin"]["sha256"] == sha256_file(out / "weights.bin")
    assert set(m["outputs"]) == {"weights.bin", "config.yaml"}
    assert m["metrics"] == {"tokens_per_s": 123.0}
    assert m["versions"]["python"] and "pydantic" in m["versions"]
    assert m["wall_time_s"] >= 0 and m["peak_rss_mb"]["self"] > 0
    assert "peak_gpu_mb" in m and "git" in m
    assert not (tmp_path / "run.partial").exists()


def test_failed_run_leaves_previous_run_untouched(tmp_path):
    out = tmp_path / "run"
    with open_run("demo", _cfg(out)) as run:
        (run.path / "v1.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with open_run("demo", _cfg(out)) as run:
            (run.path / "v2.txt").write_text("two")
            raise RuntimeError("boom")
    assert (out / "v1.txt").read_text() == "one"
    assert not (out / "v2.txt").exists()
    require_complete(out)
    assert (tmp_path / "run.partial" / "v2.txt").exists(), "partial work is kept for inspection/resume"


def test_rerun_replaces_and_clears_stale_partial(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial" / "stale.txt").write_text("old attempt")
    with open_run("demo", _cfg(out)) as run:
        (run.path / "new.txt").write_text("x")
    assert not (out / "stale.txt").exists()


def test_resume_keeps_partial_work(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial" / "checkpoint-10").write_text("ckpt")
    with open_run("demo", _cfg(out), resume=True) as run:
        assert (run.path / "checkpoint-10").exists()
    assert (out / "checkpoint-10").read_text() == "ckpt"


def test_reader_refuses_directory_without_complete(tmp_path):
    out = tmp_path / "run"
    with open_run("demo", _cfg(out)) as run:
        (run.path / "x").write_text("x")
    (out / COMPLETE).unlink()
    with pytest.raises(RunDirError, match="not a complete run: it has no COMPLETE marker"):
        require_complete(out)


def test_reader_refuses_missing_and_wrong_stage(tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        require_complete(tmp_path / "nope")
    out = tmp_path / "run"
    with open_run("data", _cfg(out)):
        pass
    with pytest.raises(RunDirError, match="written by stage 'data', expected a 'sft' run"):
        require_complete(out, "sft")


def test_input_run_directory_hashed_by_its_manifest(tmp_path):
    first = tmp_path / "first"
    with open_run("a", _cfg(first)) as run:
        (run.path / "w").write_text("w")
    second = tmp_path / "second"
    with open_run("b", _cfg(second), inputs={"upstream": first}):
        pass
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = require_complete(second)
    import hashlib

    expected = hashlib.sha256(json.dumps(m1["outputs"], sort_keys=True).encode()).hexdigest()
    assert m2["inputs"]["upstream"]["sha256"] == expected


def test_refuses_to_replace_a_folder_kofin_did_not_write(tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "important.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="already exists and is not a kofin run directory"):
        with open_run("demo", _cfg(precious)):
            pass
    assert (precious / "important.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    with open_run("demo", _cfg(empty)):
        pass
    require_complete(empty)


def test_a_second_run_on_the_same_output_dir_is_refused_while_the_first_holds_it(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    second = (
        "import sys; from kofin.rundir import open_run, RunDirError\n"
        "try:\n"
        f"    with open_run('sft', {{'output_dir': {str(out)!r}}}, resume=True): pass\n"
        "except RunDirError as e:\n    print(e); sys.exit(7)\n"
    )
    with open_run("sft", {"output_dir": str(out)}, resume=True) as run:
        (run.path / "checkpoint-1").mkdir()
        res = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True)
        assert res.returncode == 7, res.stderr
        assert "being written by another kofin run" in res.stdout and f"pid {os.getpid()}" in res.stdout
        assert (run.path / "checkpoint-1").is_dir()  # the refused run cleared nothing
    # Released when the first run ends: the same command now works.
    res = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_adapter_lineage_reads_the_manifest_record_else_the_adapter_config(tmp_path):
    from kofin import manifest_keys as keys
    from kofin.rundir import adapter_lineage, lineage_record

    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    assert adapter_lineage(sft).base_model == Path("/models/base") and adapter_lineage(sft).merged_first == ()
    dpo = tmp_path / "dpo"
    dpo.mkdir()
    (dpo / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/other"}))
    record = lineage_record(Path("/models/base"), [sft])
    assert record == {keys.LINEAGE_BASE_MODEL: "/models/base", keys.LINEAGE_MERGED_FIRST: [str(sft)]}
    (dpo / "manifest.json").write_text(json.dumps({keys.METRICS: {keys.ADAPTER_BASE: record}}))
    lineage = adapter_lineage(dpo)  # the manifest's record wins over adapter_config.json
    assert lineage.base_model == Path("/models/base") and lineage.merged_first == (sft,)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert adapter_lineage(empty).base_model is None
