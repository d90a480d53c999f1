"""Training cost lineage: what each evaluated model cost to make, from the run manifests behind it.

Run as: a library; `kofin.eval.run` writes `training_table` (one row per training stage) and
`model_cost` (each model's total, for the verdict table) into metrics.json, and
`kofin.eval.report` shows both.

A model's cost of getting there is the sum over its own run and every data / sft / dpo / merge
run upstream of it (found through the manifests' `inputs`). GPU-hours are what `kofin sft`
recorded, else wall time x the GPUs that held memory (estimated); money is the recorded cost,
else GPU-hours x the eval config's `gpu_price` (estimated). A model with no run manifest (the
base model, an endpoint) cost nothing here: it is the starting point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kofin import manifest_keys as keys
from kofin.eval.config import GpuPrice
from kofin.rundir import is_complete, require_complete

# Training-cost numbers a kofin sft/dpo manifest records under `metrics`, shown per stage.
COST_KEYS = keys.TRAINING_COST_KEYS
# Columns eval derives from a manifest's own facts where its metrics record none (DPO, merge).
STAGE = "stage"
PEAK_GPU_MEMORY_GIB = "peak_gpu_memory_gib"
PEAK_RSS_GIB = "peak_rss_gib"
GPU_HOURS_ESTIMATED = "gpu_hours_estimated"
# The training-cost table's columns, in order (kofin.eval.report shows them).
COST_COLUMNS = (
    STAGE,
    keys.METHOD,
    keys.WORLD_SIZE,
    keys.GPU_HOURS,
    GPU_HOURS_ESTIMATED,
    keys.TOKENS_PER_S,
    keys.TOKENS_PER_S_PER_GPU,
    keys.TOKENS_TOTAL,
    keys.PEAK_GPU_MEMORY_GIB_RANK0,
    PEAK_GPU_MEMORY_GIB,
    PEAK_RSS_GIB,
    keys.TRAIN_RUNTIME_S,
    keys.WALL_TIME_S,
    keys.COST,
)


def training_table(
    models: dict[str, tuple[Path, dict | None]], runs: list[Path], price: GpuPrice | None = None
) -> dict[str, dict[str, Any]]:
    """Time and cost of each training stage: the runs that made each evaluated model (a merge run's
    DPO and SFT runs before it, found through the manifests' inputs), the model's own run, then
    `training_runs`."""
    rows: dict[str, dict[str, Any]] = {}
    for name, (_, manifest) in models.items():
        if manifest is None:
            continue
        for path, upstream in _upstream_runs(manifest):
            rows.setdefault(f"{upstream.get('stage')}:{path.name}", training_cost(upstream, price))
        rows[name] = training_cost(manifest, price)
    for i, path in enumerate(runs):
        manifest = require_complete(path, what=f"training_runs[{i}]")
        rows[f"{manifest.get('stage')}:{path.name}"] = training_cost(manifest, price)
    return rows


LINEAGE_STAGES = ("data", "sft", "fedlora", "dpo", "merge")


def _upstream_runs(manifest: dict, seen: set[Path] | None = None) -> list[tuple[Path, dict]]:
    """Complete data/sft/fedlora/dpo/merge runs a run read as inputs, recursively, earliest first."""
    seen = set() if seen is None else seen
    out: list[tuple[Path, dict]] = []
    for item in (manifest.get("inputs") or {}).values():
        path = Path(item.get("path", ""))
        if path in seen or not is_complete(path):
            continue
        seen.add(path)
        upstream = require_complete(path)
        if upstream.get("stage") in LINEAGE_STAGES:
            out += _upstream_runs(upstream, seen) + [(path, upstream)]
    return out


def training_cost(manifest: dict, price: GpuPrice | None = None) -> dict[str, Any]:
    """One stage's row: what its manifest records, and estimates where it records none.

    `kofin sft` records GPU-hours and cost from its launcher; other stages (DPO in-process, merge)
    record only wall time and per-device peak memory, so GPU-hours are wall time x the GPUs that
    held memory, priced with the eval config's `gpu_hour_price`, and marked as estimates.
    """
    m = manifest.get(keys.METRICS) or {}
    row = {
        STAGE: manifest.get("stage"),
        keys.WALL_TIME_S: manifest.get(keys.WALL_TIME_S),
        **{k: m[k] for k in COST_KEYS if k in m},
    }
    gpus = {k: v for k, v in (manifest.get(keys.PEAK_GPU_MB) or {}).items() if v}
    if gpus and row.get(keys.PEAK_GPU_MEMORY_GIB_RANK0) is None:
        row[PEAK_GPU_MEMORY_GIB] = round(max(gpus.values()) / 1024, 3)
    rss = manifest.get(keys.PEAK_RSS_MB) or {}
    if rss:
        row[PEAK_RSS_GIB] = round(max(rss.values()) / 1024, 3)
    if keys.GPU_HOURS not in row and gpus and row[keys.WALL_TIME_S]:
        row[keys.GPU_HOURS] = round(row[keys.WALL_TIME_S] * len(gpus) / 3600, 4)
        row[GPU_HOURS_ESTIMATED] = True
    cost = row.get(keys.COST)
    if isinstance(cost, dict):  # {"amount": 12.0, "currency": "USD", ...} -> "12.0 USD"
        row[keys.COST] = (
            f"{cost.get('amount')} {cost.get('currency', '')}".strip() if cost.get("gpu_hour_price") != 0 else None
        )
    if row.get(keys.COST) is None and price is not None and row.get(keys.GPU_HOURS) is not None:
        row[keys.COST] = f"{round(row[keys.GPU_HOURS] * price.gpu_hour_price, 2)} {price.currency} (est.)"
    if row.get(keys.COST) is None:
        row.pop(keys.COST, None)
    return row


def _amount(manifest: dict, gpu_hours: float | None, price: GpuPrice | None) -> tuple[float | None, str | None, bool]:
    """A stage's money cost as a number: recorded, else estimated from the price; (None, None, False) when unknown."""
    cost = (manifest.get(keys.METRICS) or {}).get(keys.COST)
    if isinstance(cost, dict) and cost.get("gpu_hour_price") != 0 and cost.get("amount") is not None:
        return float(cost["amount"]), cost.get("currency"), False
    if price is not None and gpu_hours is not None:
        return gpu_hours * price.gpu_hour_price, price.currency, True
    return None, None, False


def model_cost(manifest: dict | None, price: GpuPrice | None = None) -> dict[str, Any]:
    """The GPU-hours and money it took to make one evaluated model, summed over its lineage."""
    if manifest is None:
        return {"gpu_hours": 0.0, "cost": None, "currency": None, "estimated": False, "stages": []}
    chain = [m for _, m in _upstream_runs(manifest)] + [manifest]
    hours, money, currency, estimated, known = 0.0, 0.0, None, False, True
    stages = []
    for m in chain:
        row = training_cost(m, price)
        gh = row.get(keys.GPU_HOURS)
        if gh is not None:
            hours += float(gh)
            estimated |= bool(row.get(GPU_HOURS_ESTIMATED))
        stages.append(m.get("stage"))
        amount, cur, est = _amount(m, gh, price)
        if amount is None:
            known = known and not gh  # a stage that used no GPU costs nothing; one that did and has no price is unknown
            continue
        if currency is not None and cur != currency:
            known = False  # sums across currencies mean nothing
        currency, money, estimated = cur, money + amount, estimated or est
    return {
        "gpu_hours": round(hours, 4),
        "cost": round(money, 2) if known and currency else None,
        "currency": currency if known else None,
        "estimated": estimated,
        "stages": stages,
    }
