"""Names that cross a stage boundary: manifest sections, training metrics, adapter lineage.

Run as: a library. Writers (`kofin/rundir.py`, `training/sft.py`, `training/dpo.py`) and readers
(`eval/`, `merge/`, `benchmarks/`) import these names instead of retyping the strings, so a
rename is one edit here and a reader that still spells the old name fails a test
(tests/test_manifest_keys.py), not a GPU run weeks later.
"""

from __future__ import annotations

# ---------------------------------------------------------------- manifest.json, top level (kofin.rundir)
METRICS = "metrics"  # the stage's own numbers, below
WALL_TIME_S = "wall_time_s"
PEAK_RSS_MB = "peak_rss_mb"  # {"self": MiB, "children": MiB}
PEAK_GPU_MB = "peak_gpu_mb"  # {"cuda:0": MiB, ...} or null without a GPU
HOST = "host"

# ---------------------------------------------------------------- manifest["metrics"] of training runs (sft, dpo)
METHOD = "method"
STEPS = "steps"
LOSS_FIRST = "loss_first"
LOSS_LAST = "loss_last"
TRAIN_RUNTIME_S = "train_runtime_s"
TOKENS_TOTAL = "tokens_total"
TOKENS_PER_S = "tokens_per_s"
TOKENS_PER_S_PER_GPU = "tokens_per_s_per_gpu"
# axolotl logs device memory from rank 0 only; DDP ranks hold the same model and batch size.
PEAK_GPU_MEMORY_GIB_RANK0 = "peak_gpu_memory_gib_rank0"
MEMORY_ESTIMATE_GIB_PER_GPU = "memory_estimate_gib_per_gpu"
TRAINABLE_PARAMS = "trainable_params"
WORLD_SIZE = "world_size"
GPU_HOURS = "gpu_hours"
COST = "cost"
# DPO only
BACKEND = "backend"
PAIRS = "pairs"
REWARD_MARGIN_FIRST = "reward_margin_first"
REWARD_MARGIN_LAST = "reward_margin_last"
REWARD_ACCURACY_LAST = "reward_accuracy_last"
# Fraction of the trained adapter's elements that differ from where training started: a 4-bit
# base with bf16 adapters at DPO's small learning rate leaves most of them unchanged.
ADAPTER_ELEMENTS_CHANGED = "adapter_elements_changed"

# ---------------------------------------------------------------- adapter lineage (dpo writes, eval and merge read)
# manifest["metrics"][ADAPTER_BASE] = {LINEAGE_BASE_MODEL: path, LINEAGE_MERGED_FIRST: [sft run, ...]},
# also written beside the adapter as ADAPTER_BASE_FILE. Read through kofin.rundir.adapter_lineage.
ADAPTER_BASE = "adapter_base"
LINEAGE_BASE_MODEL = "base_model"
LINEAGE_MERGED_FIRST = "merged_first"
ADAPTER_BASE_FILE = "adapter_base.json"

# What eval's training-cost table takes from a training manifest, in column order.
TRAINING_COST_KEYS = (
    METHOD,
    WORLD_SIZE,
    GPU_HOURS,
    COST,
    TOKENS_PER_S,
    TOKENS_PER_S_PER_GPU,
    TOKENS_TOTAL,
    PEAK_GPU_MEMORY_GIB_RANK0,
    TRAIN_RUNTIME_S,
)
# What `kofin sft` writes into manifest["metrics"], checked against a real run by the tests.
SFT_METRICS = (
    METHOD,
    STEPS,
    LOSS_FIRST,
    LOSS_LAST,
    TOKENS_TOTAL,
    TRAIN_RUNTIME_S,
    TOKENS_PER_S,
    TOKENS_PER_S_PER_GPU,
    PEAK_GPU_MEMORY_GIB_RANK0,
    MEMORY_ESTIMATE_GIB_PER_GPU,
    TRAINABLE_PARAMS,
    WORLD_SIZE,
    GPU_HOURS,
    COST,
)
DPO_METRICS = (
    BACKEND,
    PAIRS,
    STEPS,
    LOSS_FIRST,
    LOSS_LAST,
    REWARD_MARGIN_FIRST,
    REWARD_MARGIN_LAST,
    REWARD_ACCURACY_LAST,
    TRAIN_RUNTIME_S,
    TOKENS_PER_S,
    ADAPTER_ELEMENTS_CHANGED,
    ADAPTER_BASE,
)
