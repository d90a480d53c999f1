"""User data errors through `kofin data build`: the file, line and field the user must fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kofin.data_ko.corpus import DocumentError
from kofin.data_ko.formats import read_instructions

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "tiny.yaml"


def build_sft_with(path: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "kofin.cli",
        "data",
        "build-sft",
        "--config",
        str(CONFIG),
        f"sft.instructions=[{{path: {path}}}]",
        f"output_dir={out}",
        "--quiet",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_role_error_names_the_message_as_the_user_wrote_it(tmp_path):
    # A system prompt is added to built chats; the error must still point at the user's index.
    bad = tmp_path / "order.jsonl"
    bad.write_text(
        json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}) + "\n"
    )
    res = build_sft_with(bad, tmp_path / "out")
    assert res.returncode == 1
    assert "order.jsonl:1  messages[0].role: expected 'user'" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_cp949_file_is_named_with_line_and_fix(tmp_path):
    bad = tmp_path / "export.jsonl"
    rows = [{"instruction": "hello", "output": "ok"}, {"instruction": "예금이란?", "output": "돈을 맡기는 것"}]
    bad.write_bytes("\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("cp949"))
    with pytest.raises(DocumentError, match=r"export\.jsonl:2: not UTF-8 .*iconv -f cp949"):
        list(read_instructions(bad, "alpaca", None))
    res = build_sft_with(bad, tmp_path / "out")
    assert res.returncode == 1 and "export.jsonl:2: not UTF-8" in res.stderr, res.stderr


def test_utf8_bom_from_excel_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"instruction": "질문", "output": "답"}, ensure_ascii=False).encode())
    rows = list(read_instructions(p, "alpaca", None))
    assert rows[0]["messages"][0]["content"] == "질문"


def test_a_missing_input_is_named_by_key_and_line_and_leaves_nothing_behind(tmp_path):
    from kofin.config import ConfigError, load_config
    from kofin.data_ko.config import DataConfig
    from kofin.data_ko.run import main

    examples = Path(__file__).resolve().parents[1] / "data_ko" / "examples"
    cfg_file = tmp_path / "data.yaml"
    cfg_file.write_text(
        "output_dir: out\n"
        "sft:\n"
        "  documents:\n"
        "    - path: null\n"
        "  instructions:\n"
        f"    - path: {examples / 'instructions_alpaca.jsonl'}\n"
        "      format: alpaca\n"
        "    - path: missing.jsonl\n"
        "      format: sharegpt\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        main(load_config(DataConfig, cfg_file), quiet=True)
    assert "data.yaml:8  sft.instructions.1.path:" in str(info.value) and "missing.jsonl does not exist" in str(
        info.value
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.yaml"]  # no out.partial/, no .out.lock
