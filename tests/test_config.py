"""Config loading: YAML < overrides, every problem at once with key path, line and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from kofin.config import ConfigError, KofinModel, ResolvedPath, StageConfig, describe_fields, load_config


class Lora(KofinModel):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA alpha")
    targets: list[str] = Field(default_factory=lambda: ["q_proj"], description="modules")


class Example(StageConfig):
    base_model: ResolvedPath | None = Field(None, description="local model path")
    method: Literal["lora", "qlora"] = Field("lora", description="adapter method")
    lora: Lora = Field(default_factory=Lora)
    datasets: list[ResolvedPath] = Field(default_factory=list, description="data files")


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / "configs" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_then_overrides_and_types(tmp_path):
    p = write(tmp_path, "output_dir: out\nlora:\n  r: 8\n")
    cfg = load_config(Example, p, ["lora.alpha=64", "method=qlora", "lora.targets=[q_proj, v_proj]"])
    assert (cfg.lora.r, cfg.lora.alpha, cfg.method) == (8, 64.0, "qlora")
    assert cfg.lora.targets == ["q_proj", "v_proj"]


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    p = write(tmp_path, "output_dir: ../runs/x\nbase_model: models/m\ndatasets: [d/a.jsonl]\n")
    monkeypatch.chdir("/")
    cfg = load_config(Example, p)
    assert cfg.output_dir == tmp_path / "runs" / "x"
    assert cfg.base_model == tmp_path / "configs" / "models" / "m"
    assert cfg.datasets == [tmp_path / "configs" / "d" / "a.jsonl"]


def test_relative_path_override_resolves_against_cwd(tmp_path, monkeypatch):
    p = write(tmp_path, "output_dir: out\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Example, p, ["base_model=here/m"])
    assert cfg.base_model == tmp_path / "here" / "m"


def test_every_problem_reported_at_once_with_line_and_key(tmp_path):
    p = write(tmp_path, "output_dir: out\nmethod: dora\nlora:\n  r: 0\n  alhpa: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p)
    problems = info.value.problems
    assert len(problems) == 3, problems
    text = str(info.value)
    assert "3 problems in" in text
    assert "c.yaml:4  lora.r: must be > 0 (got 0)" in problems
    assert "c.yaml:5  lora.alhpa: unknown key; did you mean 'alpha'?" in problems
    assert any(p.startswith("c.yaml:2  method: must be one of 'lora' or 'qlora'") for p in problems), problems


def test_unknown_top_level_key_and_missing_required(tmp_path):
    p = write(tmp_path, "ouput_dir: out\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p)
    problems = info.value.problems
    assert "c.yaml:1  ouput_dir: unknown key; did you mean 'output_dir'?" in problems
    assert any(p.startswith("output_dir: required key is missing") for p in problems), problems


def test_override_errors_are_attributed_to_the_command_line(tmp_path):
    p = write(tmp_path, "output_dir: out\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p, ["lora.r=-1", "nonsense"])
    assert info.value.problems == ["override 'nonsense': expected KEY=VALUE, e.g. lora.r=16"]
    with pytest.raises(ConfigError) as info:
        load_config(Example, p, ["lora.r=-1"])
    assert info.value.problems == ["command line  lora.r: must be > 0 (got -1)"]


class Source(KofinModel):
    path: ResolvedPath | None = None
    limit: int = 0


class WithList(StageConfig):
    sources: list[Source] = Field(default_factory=list)


def test_override_inside_a_list(tmp_path):
    p = write(tmp_path, "output_dir: out\nsources:\n  - path: a\n  - path: b\n")
    cfg = load_config(WithList, p, ["sources.1.limit=4"])
    assert [s.limit for s in cfg.sources] == [0, 4]
    assert cfg.sources[1].path == tmp_path / "configs" / "b"


def test_nested_unknown_override_is_attributed_to_the_command_line(tmp_path):
    p = write(tmp_path, "output_dir: out\nlora:\n  r: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p, ["lora.rank.x=3", "method=dora"])
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert any(p.startswith("command line  lora.rank: unknown key") for p in problems), problems
    assert any(p.startswith("command line  method: must be one of") for p in problems), problems


def test_invalid_yaml_names_the_line(tmp_path):
    p = write(tmp_path, "output_dir: out\nlora: [r: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p)
    assert "not valid YAML" in str(info.value) and "c.yaml:" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Example, tmp_path / "nope.yaml")


def test_describe_fields_feeds_help():
    rows = {k: (d, desc) for k, d, desc in describe_fields(Example)}
    assert rows["lora.r"] == ("16", "LoRA rank")
    assert rows["output_dir"][0] == "required"


def test_an_unclosed_bracket_is_reported_where_it_opens(tmp_path):
    p = write(tmp_path, "output_dir: out\nlora:\n  targets: [q_proj, k_proj\n  r: 8\nmethod: lora\n")
    with pytest.raises(ConfigError) as info:
        load_config(Example, p)
    message = str(info.value)
    assert "c.yaml:3  not valid YAML" in message and "[q_proj, k_proj" in message and "line 4" in message, message
