"""Every shipped config validates against its stage's model (torchtune: a test loads every one)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from kofin.cli import COMMANDS
from kofin.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml"))


def test_there_are_configs():
    assert any(p.parent.name == "data" and p.name == "tiny.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads(path):
    stage = path.parent.name
    assert stage in COMMANDS, f"configs/{stage}/ has no kofin command"
    target = COMMANDS[stage].config
    assert target, f"configs/{stage}/{path.name} exists but the {stage} stage has no config model yet"
    module, _, name = target.partition(":")
    model = getattr(importlib.import_module(module), name)
    cfg = load_config(model, path)
    if stage == "pipeline":  # a pipeline writes nothing itself; its steps' configs must exist
        assert all(step.config.is_file() for step in cfg.stages)
    else:
        assert cfg.output_dir.is_absolute()
