"""Names that cross a stage boundary are written once (kofin.manifest_keys): what the writers put in
real manifests is what the readers ask for, and no reader retypes a name as a string."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from kofin import manifest_keys as keys
from kofin.config import load_config
from kofin.rundir import adapter_lineage, require_complete

ROOT = Path(__file__).resolve().parents[1]
READERS = [
    *sorted((ROOT / "eval").glob("*.py")),
    *sorted((ROOT / "merge").glob("*.py")),
    *sorted((ROOT / "benchmarks").glob("**/*.py")),
    ROOT / "kofin" / "pipeline.py",
]
# Names distinctive enough to find as string literals; "method" or "steps" are ordinary words.
DISTINCT = (
    keys.PEAK_GPU_MEMORY_GIB_RANK0,
    keys.MEMORY_ESTIMATE_GIB_PER_GPU,
    keys.TOKENS_PER_S_PER_GPU,
    keys.TOKENS_PER_S,
    keys.TRAINABLE_PARAMS,
    keys.ADAPTER_BASE,
    keys.LINEAGE_MERGED_FIRST,
    keys.ADAPTER_ELEMENTS_CHANGED,
    keys.REWARD_MARGIN_LAST,
    keys.PEAK_GPU_MB,
    keys.PEAK_RSS_MB,
    "peak_gpu_memory_gib_per_gpu",
)  # the old name sft stopped writing: a reader of it would KeyError on a GPU
# A read of a manifest or its metrics by a literal name: manifest["x"], m["x"], metrics.get("x"), recorded["x"].
READ = re.compile(r"\b(manifest|metrics|m|recorded|upstream)(?:\.get\(|\[)\s*[\"'](" + "|".join(DISTINCT) + r")[\"']")


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_reader_retypes_a_manifest_name():
    found = {}
    for path in READERS:
        rel = str(path.relative_to(ROOT))
        hits = {m.group(2) for m in READ.finditer(path.read_text(encoding="utf-8"))}
        if hits:
            found[rel] = sorted(hits)
    assert not found, f"import these from kofin.manifest_keys instead of retyping them: {found}"


def test_the_scan_sees_a_retyped_name(tmp_path):
    """The scan above can fail: a reader written the old way is caught."""
    text = 'm = manifest["metrics"]\npeak = m["peak_gpu_memory_gib_per_gpu"]\nrecorded.get("merged_first")\n'
    assert {m.group(2) for m in READ.finditer(text)} == {"peak_gpu_memory_gib_per_gpu", "merged_first"}


@pytest.mark.slow
def test_a_real_sft_manifest_has_what_every_reader_asks_for(axolotl_sft_run):
    from kofin.eval.run import COST_COLUMNS, training_cost

    manifest = require_complete(axolotl_sft_run, "sft")
    metrics = manifest[keys.METRICS]
    assert set(keys.SFT_METRICS) <= metrics.keys(), set(keys.SFT_METRICS) - metrics.keys()
    assert {keys.WALL_TIME_S, keys.PEAK_RSS_MB, keys.PEAK_GPU_MB, keys.HOST} <= manifest.keys()
    # eval's cost row and report columns
    row = training_cost(manifest)
    assert set(keys.TRAINING_COST_KEYS) <= set(COST_COLUMNS)
    assert row[keys.TOKENS_PER_S] == metrics[keys.TOKENS_PER_S] and keys.PEAK_GPU_MEMORY_GIB_RANK0 in row
    assert set(row) <= set(COST_COLUMNS)
    # the GPU benchmark's record: the KeyError the old name caused would surface here, on CPU
    bench = load_benchmark("sft_eeve_width")
    args = bench.parse_args(["--layers", "2"])
    result = bench.result_from_manifest(manifest, argparse.Namespace(**vars(args)), wall_s=1.0)
    assert result["tokens_per_s"] == metrics[keys.TOKENS_PER_S]
    assert result["memory_estimate_gib_per_gpu"] == metrics[keys.MEMORY_ESTIMATE_GIB_PER_GPU]
    # an SFT run records no lineage: its adapter's own config names the base
    lineage = adapter_lineage(axolotl_sft_run)
    assert lineage.merged_first == () and (lineage.base_model / "config.json").is_file()


@pytest.mark.slow
def test_a_real_dpo_manifest_has_its_metrics_and_lineage(tmp_path, axolotl_sft_run, tiny_data_run):
    from kofin.training import dpo
    from kofin.training.dpo_config import DpoConfig

    cfg = load_config(
        DpoConfig,
        ROOT / "configs" / "dpo" / "tiny.yaml",
        [
            f"output_dir={tmp_path / 'dpo'}",
            f"sft_run={axolotl_sft_run}",
            f"preferences=[{tiny_data_run}]",
            "adapter_mode=merge",
            "training.max_steps=1",
        ],
    )
    run = dpo.main(cfg, quiet=True)
    manifest = require_complete(run, "dpo")
    assert set(keys.DPO_METRICS) <= manifest[keys.METRICS].keys()
    lineage = adapter_lineage(run)
    assert lineage.merged_first == (axolotl_sft_run,)
    assert (run / keys.ADAPTER_BASE_FILE).is_file()
