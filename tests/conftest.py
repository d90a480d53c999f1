"""Shared fixtures: offline environment, the network guard, and the tiny model.

Every test runs offline by construction: kofin's offline environment is applied, and a socket
guard refuses and records any connection that leaves 127.0.0.1, in this process and in every
Python subprocess a test starts. A test during which such an attempt happened fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from kofin.offline import apply_offline_env

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LAWS = SHARED / "data" / "laws"
_GUARD_DIR = Path(__file__).parent / "_netguard"

sys.path.insert(0, str(_GUARD_DIR))
import netguard  # noqa: E402

sys.path.pop(0)


def pytest_configure(config: pytest.Config) -> None:
    apply_offline_env()
    # Scratch outside the checkout, one folder per session: two test runs never share it.
    run_dir = Path(tempfile.mkdtemp(prefix="kofin-tests-"))
    # A fresh KOFIN_HOME per session: the tiny model is built once (seconds) and nothing from a
    # developer's own cache leaks into the results.
    os.environ["KOFIN_HOME"] = str(run_dir / "home")
    os.environ["KOFIN_NETGUARD_REPORT"] = str(run_dir / "network-attempts.log")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(_GUARD_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    netguard.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    home = os.environ.get("KOFIN_HOME", "")
    if Path(home).parent.name.startswith("kofin-tests-"):
        shutil.rmtree(Path(home).parent, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_network_left_this_machine():
    report = Path(os.environ["KOFIN_NETGUARD_REPORT"])
    before = report.stat().st_size if report.exists() else 0
    yield
    if report.exists() and report.stat().st_size > before:
        with open(report, encoding="utf-8") as f:
            f.seek(before)
            attempts = f.read()
        pytest.fail(f"test tried to reach the network (only 127.0.0.1 is allowed):\n{attempts}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The embedded tiny EEVE-shaped model (built once per session under KOFIN_HOME)."""
    from kofin.tiny import default_tiny_model

    return default_tiny_model()


@pytest.fixture(scope="session")
def laws_dir() -> Path:
    """../shared/data/laws: real statute text and dev questions, read in place, never copied."""
    if not (LAWS / "fin_articles.jsonl").exists():
        pytest.fail(f"shared data missing: {LAWS} (CI clones ../shared beside the repo)")
    return LAWS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from importlib.util import find_spec

    has_cuda = False
    if find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    no_gpu = pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_gpu)


@pytest.fixture(scope="session")
def tiny_data_run(tmp_path_factory, tiny_model) -> Path:
    """A complete `kofin data` run (SFT chats, raw text, preference pairs) from four bundled documents."""
    from kofin.config import load_config
    from kofin.data_ko.config import DataConfig
    from kofin.data_ko.run import main

    out = tmp_path_factory.mktemp("data-run") / "data"
    overrides = [f"output_dir={out}", "sft.documents.0.max_documents=4", "dpo.documents.0.max_documents=4"]
    return main(load_config(DataConfig, ROOT / "configs" / "data" / "tiny.yaml", overrides), quiet=True)


@pytest.fixture(scope="session")
def axolotl_env() -> Path:
    """The pinned axolotl env that `make test` creates; SFT tests run real axolotl in it."""
    from kofin.training.launch import axolotl_env as locate
    from kofin.training.sft_config import Launch

    env = locate(Launch())
    if not (env / "bin" / "axolotl").exists():
        pytest.fail(f"no axolotl env at {env}: run `make axolotl-env` (make test creates it)")
    return env


@pytest.fixture(scope="session")
def axolotl_sft_run(tmp_path_factory, tiny_data_run, axolotl_env) -> Path:
    """A real `kofin sft` run (axolotl, LoRA on the tiny model, 3 steps), shared by the DPO and merge tests."""
    from kofin.config import load_config
    from kofin.training.sft import main
    from kofin.training.sft_config import SftConfig

    out = tmp_path_factory.mktemp("sft") / "sft"
    cfg = load_config(
        SftConfig,
        ROOT / "configs" / "sft" / "tiny.yaml",
        [f"output_dir={out}", f"datasets.0.path={tiny_data_run}", "training.max_steps=3", "training.save_steps=3"],
    )
    return main(cfg, quiet=True)


@pytest.fixture(scope="session")
def bundled_kb(tmp_path_factory) -> Path:
    """The bundled 가람은행 knowledge base (data_ko/kb, with its restricted documents), built once."""
    from kofin.serve.chunking import ChunkingConfig
    from kofin.serve.ingest import IngestConfig, main

    out = tmp_path_factory.mktemp("bundled") / "kb-demo"
    main(IngestConfig(output_dir=out, inputs=[ROOT / "data_ko" / "kb"], chunking=ChunkingConfig(max_chars=900)))
    return out


# The browser tests (chat, login page, eval report) drive Debian's Chromium through Playwright's
# API, never a browser `playwright install` downloads. Without the background-networking flags
# Chromium keeps calling Google services, which a closed bank network (and the tests' request
# checks) refuse.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium; fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium; `make test` does it first)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()
