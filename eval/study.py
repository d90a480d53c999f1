"""FinLoRA's results table: every evaluated model (a study's arms) x every task, with the cost of each arm.

Run as: a library; `kofin eval` writes it into every run that compares two or more models
(`finlora_table.csv`, `finlora_table.md`, and a section of report.md / report.html), so the
LoRA-method study (configs/pipeline/finlora_study_tiny.yaml: one sweep arm per method, the eval
step comparing them) needs no hand-written table.

Rows: the base model first, then each model in config order (a study's arms: sft-lora-r8, sft-dora-r8,
fedlora ...). Per task: accuracy and weighted F1 as FinLoRA reports them (for a generated-answer task,
exact match and token F1; BERTScore F1 where the eval config names an encoder), each marked when it
differs significantly from the base (the eval pack's paired tests, kofin.eval.verdict). Cost columns,
from each arm's run manifest (kofin.eval.cost) and the eval's own timing:

- train_wall_time_s: the training run's wall time (manifest `wall_time_s`);
- gpu_hours: recorded by `kofin sft`, else estimated from wall time and the GPUs that held memory;
- peak_memory_gib (+ peak_memory_of): peak GPU memory when a GPU was used, else the peak RSS;
- adapter_mb: the adapter weights the run wrote (adapter_model.*), empty for a full model;
- latency_s_per_example: eval's scoring time per example for that model (batched at the config's
  batch_size, on the eval's device), over every task it scored; from records/<model>/latency.json.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from kofin import manifest_keys as keys
from kofin.eval.cost import PEAK_GPU_MEMORY_GIB, PEAK_RSS_GIB, training_cost
from kofin.eval.verdict import BETTER, WORSE, direction

TABLE_CSV, TABLE_MD = "finlora_table.csv", "finlora_table.md"
LATENCY_FILE = "latency.json"  # records/<model>/latency.json: {task: {"seconds": s, "examples": n}}
# The metric FinLoRA calls accuracy / F1, per task kind (a kind with no F1 shows none).
ACCURACY = {
    "mcq": "acc",
    "classification": "acc",
    "numeric_qa": "exact_match",
    "rag": "citation_format_ok",
    "pairwise": "win_rate",
}
F1 = {"classification": "weighted_f1", "numeric_qa": "token_f1"}
BERTSCORE = "bertscore_f1"
# Cost columns, in order; each arm's values come from its manifest (model_columns) and eval's timing.
METHOD, TRAINABLE = keys.METHOD, keys.TRAINABLE_PARAMS
TRAIN_WALL, GPU_HOURS, PEAK_MEMORY, PEAK_MEMORY_OF = (
    "train_wall_time_s",
    keys.GPU_HOURS,
    "peak_memory_gib",
    "peak_memory_of",
)
ADAPTER_MB, LATENCY = "adapter_mb", "latency_s_per_example"
COST_COLUMNS = (TRAIN_WALL, GPU_HOURS, PEAK_MEMORY, PEAK_MEMORY_OF, ADAPTER_MB, LATENCY)
LABELS = {
    METHOD: "방법",
    TRAINABLE: "학습 파라미터",
    TRAIN_WALL: "학습 시간(초)",
    GPU_HOURS: "GPU-시간",
    PEAK_MEMORY: "최대 메모리(GiB)",
    PEAK_MEMORY_OF: "메모리 기준",
    ADAPTER_MB: "어댑터 크기(MB)",
    LATENCY: "추론 지연(초/예제)",
}
MARKS = {BETTER: "▲", WORSE: "▼"}


def task_metrics(kind: str, result: dict[str, float]) -> dict[str, str]:
    """{column: metric} of one task: accuracy, f1 and bertscore where the task has them."""
    out = {"acc": ACCURACY[kind]} if ACCURACY.get(kind) in result else {}
    if F1.get(kind) in result:
        out["f1"] = F1[kind]
    if BERTSCORE in result:
        out["bertscore"] = BERTSCORE
    return out


def model_columns(manifest: dict[str, Any] | None, latency: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Method and cost of one evaluated model, from its run manifest (None: the base, nothing trained)."""
    seconds = sum(t["seconds"] for t in latency.values())
    examples = sum(t["examples"] for t in latency.values())
    row: dict[str, Any] = {LATENCY: round(seconds / examples, 4) if examples else None}
    if manifest is None:
        return row | {METHOD: "base", TRAIN_WALL: 0.0, GPU_HOURS: 0.0}
    cost = training_cost(manifest)
    metrics = manifest.get(keys.METRICS) or {}
    row[METHOD] = metrics.get(keys.METHOD) or manifest.get("stage")
    row[TRAINABLE] = metrics.get(keys.TRAINABLE_PARAMS)
    row[TRAIN_WALL] = manifest.get(keys.WALL_TIME_S)
    row[GPU_HOURS] = cost.get(keys.GPU_HOURS)
    for key, of in ((keys.PEAK_GPU_MEMORY_GIB_RANK0, "GPU"), (PEAK_GPU_MEMORY_GIB, "GPU"), (PEAK_RSS_GIB, "RSS")):
        if cost.get(key) is not None:
            row[PEAK_MEMORY], row[PEAK_MEMORY_OF] = cost[key], of
            break
    adapter = [o["bytes"] for name, o in (manifest.get("outputs") or {}).items() if name.startswith("adapter_model")]
    row[ADAPTER_MB] = round(sum(adapter) / 2**20, 3) if adapter else None
    return row


def finlora_rows(
    metrics: dict[str, Any], manifests: dict[str, dict[str, Any] | None], records_root: Path
) -> list[dict[str, Any]]:
    """One row per model, the base first: {model, method, cost columns, cells: {task: {col: cell}}}."""
    base = metrics["base"]
    rows = []
    for model in [base] + [m for m in metrics["models"] if m != base]:
        latency_file = records_root / model / LATENCY_FILE
        timing = json.loads(latency_file.read_text(encoding="utf-8")) if latency_file.exists() else {}
        latency = {t: v for t, v in timing.items() if t in metrics["tasks"]}  # a task dropped since is not timed
        row: dict[str, Any] = {"model": model, **model_columns(manifests.get(model), latency), "cells": {}}
        for task, info in metrics["tasks"].items():
            result = metrics["results"][model].get(task)
            if result is None:  # pairwise tasks keep their numbers in the preference section
                continue
            cells = {}
            for column, metric in task_metrics(info["kind"], result).items():
                test = None if model == base else metrics["comparisons"].get(model, {}).get(task, {}).get(metric)
                cells[column] = {
                    "metric": metric,
                    "value": result[metric],
                    "p_value": test["p_value"] if test else None,
                    "direction": direction(metric, test) if test else None,
                }
            row["cells"][task] = cells
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(task, column) pairs in task order, each column once."""
    out: list[tuple[str, str]] = []
    for row in rows:
        for task, cells in row["cells"].items():
            out += [(task, c) for c in cells if (task, c) not in out]
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    cols = _columns(rows)
    head = ["model", METHOD, TRAINABLE]
    head += [f"{t}.{c}{suffix}" for t, c in cols for suffix in ("", ".p_vs_base")]
    head += list(COST_COLUMNS)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(head)
    for row in rows:
        cells = []
        for t, c in cols:
            cell = row["cells"].get(t, {}).get(c)
            cells += [cell["value"], cell["p_value"]] if cell else ["", ""]
        out.writerow([row["model"], row.get(METHOD), row.get(TRAINABLE), *cells, *(row.get(k) for k in COST_COLUMNS)])
    return buf.getvalue()


def _shown(v: Any) -> str:
    if v is None or v == "":
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def table(rows: list[dict[str, Any]], task_names: dict[str, str]) -> list[list[str]]:
    """The table as the report shows it: one cell per task, 'acc / F1' with ▲ ▼ where significant."""
    tasks = list(dict.fromkeys(t for t, _ in _columns(rows)))
    head = ["모델", LABELS[METHOD], *(task_names.get(t, t) for t in tasks), *(LABELS[k] for k in COST_COLUMNS)]
    out = [head]
    for row in rows:
        shown = []
        for t in tasks:
            cells = row["cells"].get(t, {})
            shown.append(
                " / ".join(_shown(c["value"]) + MARKS.get(c["direction"] or "", "") for c in cells.values()) or "—"
            )
        out.append([row["model"], _shown(row.get(METHOD)), *shown, *(_shown(row.get(k)) for k in COST_COLUMNS)])
    return out


def note(rows: list[dict[str, Any]], base: str) -> str:
    kinds = sorted({c["metric"] for r in rows for cells in r["cells"].values() for c in cells.values()})
    return (
        f"행: 기준 모델({base}) 다음 각 실험 조건. 과제 칸: 정확도 / 가중 F1 (생성 과제: 완전일치 / 토큰 F1, "
        f"인코더가 있으면 BERTScore F1), 쓰인 지표: {', '.join(kinds)}. ▲ ▼: 기준 모델 대비 유의하게 "
        "나아짐 / 나빠짐 (p < 0.05, 같은 예제끼리 짝지은 검정). 학습 시간·GPU-시간·메모리·어댑터 크기는 "
        "각 실행의 manifest에서, 추론 지연은 이 평가의 채점 시간(예제당, 배치 처리)입니다."
    )


def write_finlora_table(run_dir: Path, metrics: dict[str, Any], manifests: dict[str, dict[str, Any] | None]) -> Any:
    """Write finlora_table.csv / .md into the run; returns the report blocks of the table."""
    from kofin.rundir import atomic_write_text

    rows = finlora_rows(metrics, manifests, run_dir / "records")
    names = {t: info.get("description") or t for t, info in metrics["tasks"].items()}
    shown = table(rows, names)
    atomic_write_text(run_dir / TABLE_CSV, to_csv(rows))
    md = ["| " + " | ".join(r) + " |" for r in shown]
    md.insert(1, "|" + "---|" * len(shown[0]))
    atomic_write_text(run_dir / TABLE_MD, "\n".join(md + ["", note(rows, metrics["base"])]) + "\n")
    return [("h2", "방법 비교 (FinLoRA 표)"), ("table", shown), ("p", note(rows, metrics["base"]))]


def build_report_with_table(run_dir: Path, study: Any) -> None:
    """kofin.eval.report's report (charts/, report.md, report.html) with the table after the verdict,
    before every cell's interval."""
    from kofin.eval.charts import draw_charts
    from kofin.eval.report import blocks, metric_label, render_html, render_markdown
    from kofin.rundir import atomic_write_text

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    charts = draw_charts(metrics, run_dir / "charts", metric_label)
    parts = blocks(metrics, run_dir, charts)
    at = next((i for i, b in enumerate(parts) if b[0] == "h2" and "95% 구간" in str(b[1])), len(parts))
    parts[at:at] = study
    atomic_write_text(run_dir / "report.md", render_markdown(parts))
    atomic_write_text(run_dir / "report.html", render_html(parts))
