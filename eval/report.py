"""The internal eval report: `report.md`, a self-contained `report.html` and the charts, from a run's records.

Run as: a library; `kofin eval` writes the report into its run directory after scoring
(`build_report(run_dir)` rebuilds it from `metrics.json` and `records/`).

Sections: every model x task (primary metric, then all metrics), a bar chart per task per model,
forgetting deltas on the general tasks, retrieval Recall@k curves of RAG tasks, training cost and time from the models' run manifests,
and a drill-down of each model's failed examples. Charts are PNGs drawn by matplotlib with a
Korean-capable font (a system one such as NanumGothic / Noto Sans CJK KR when present, else the
Noto Sans CJK font `mplfonts` bundles), embedded in the HTML as data URIs so it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.eval.cost import COST_COLUMNS  # the training-cost row's names, defined where the row is built
from kofin.eval.verdict import PRIMARY
from kofin.rundir import atomic_write_text

KOREAN_FONT_NAMES = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Malgun Gothic", "AppleGothic", "UnDotum")
MAX_FAILURES = 5  # per model and task in the drill-down


@lru_cache(maxsize=1)
def korean_font() -> Path:
    """A font file with Hangul glyphs: a known Korean system font, else the one mplfonts bundles."""
    from importlib.util import find_spec

    from matplotlib import font_manager

    for entry in font_manager.fontManager.ttflist:
        if entry.name in KOREAN_FONT_NAMES:
            return Path(entry.fname)
    spec = find_spec("mplfonts")  # located, not imported: importing it rewrites matplotlib's rcParams
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "NotoSansCJKsc-Regular.otf"
        if bundled.exists():
            return bundled
    raise KofinError("no font with Korean glyphs found for the report's charts: install the eval extra "
                     "(pip install -e .[eval], it bundles Noto Sans CJK) or a system font such as fonts-nanum")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    font = korean_font()
    font_manager.fontManager.addfont(str(font))
    plt.rcParams["font.family"] = font_manager.FontProperties(fname=str(font)).get_name()
    plt.rcParams["axes.unicode_minus"] = False  # the minus glyph is missing from some CJK fonts
    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)  # a chart is whole or absent
    return path


def _label(metrics: dict, task: str) -> str:
    return metrics["tasks"][task].get("description") or task


def bar_chart(metrics: dict, path: Path) -> Path:
    """Primary metric per task (x) per model (bars)."""
    plt = _pyplot()
    tasks, models = list(metrics["tasks"]), metrics["models"]
    fig, ax = plt.subplots(figsize=(min(max(6, 1.4 * len(tasks)), 14), 4.6))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        values = [metrics["results"][model][t][PRIMARY[metrics["tasks"][t]["kind"]]] for t in tasks]
        bars = ax.bar([i + j * width for i in range(len(tasks))], values, width, label=model)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))])
    ax.set_xticklabels([_label(metrics, t) for t in tasks], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("주 지표 (정확도 · 가중 F1 · 완전일치 · MRR)")
    ax.set_title("과제별 모델 성능")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def forgetting_chart(metrics: dict, path: Path) -> Path | None:
    """Each tuned model's change on the general tasks (negative = forgotten)."""
    rows = [(m, t, d[PRIMARY[metrics["tasks"][t]["kind"]]]) for m, per in metrics["forgetting"].items() for t, d in per.items()]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    labels = [f"{m} · {_label(metrics, t)}" for m, t, _ in rows]
    values = [v for _, _, v in rows]
    bars = ax.barh(labels, values, color=["#c0392b" if v < 0 else "#27ae60" for v in values])
    ax.bar_label(bars, fmt="%+.2f", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"기준 모델({metrics['base']}) 대비 변화")
    ax.set_title("망각 점검: 일반 과제 성능 변화")
    return _save(plt, fig, path)


def recall_chart(metrics: dict, path: Path) -> Path | None:
    """Recall@k against k for each RAG task and model."""
    rag = [t for t, info in metrics["tasks"].items() if info["kind"] == "rag"]
    if not rag:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cutoffs: set[int] = set()
    for t in rag:
        for m in metrics["models"]:
            points = sorted((int(k.split("@")[1]), v) for k, v in metrics["results"][m][t].items() if k.startswith("recall@"))
            ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=f"{m} · {_label(metrics, t)}")
            cutoffs |= {k for k, _ in points}
    ax.set_xticks(sorted(cutoffs))  # the measured cut-offs, not fractional ticks between them
    ax.set_xlabel("k (검색 문서 수)")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.05)
    ax.set_title("검색 재현율 곡선")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _records(run_dir: Path, model: str, task: str) -> list[dict]:
    path = run_dir / "records" / model / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failures(metrics: dict, run_dir: Path, model: str, task: str) -> list[dict[str, str]]:
    """Up to MAX_FAILURES examples the model got wrong (by the task's primary scoring)."""
    kind = metrics["tasks"][task]["kind"]
    out = []
    for r in _records(run_dir, model, task):
        if kind == "rag":  # the gold document was not retrieved at all
            wrong, gold, pred = not set(r["gold_ids"]) & set(r["retrieved"]), ", ".join(r["gold_ids"]), ", ".join(r["retrieved"][:3])
        elif kind == "numeric_qa":
            wrong, gold, pred = not r["exact_match"], str(r["gold"]), r["generation"]
        else:
            wrong, gold, pred = r["pred_ll"] != r["gold"], r["choices"][r["gold"]], r["choices"][r["pred_ll"]]
        if wrong:
            out.append({"id": r["id"], "where": r["where"], "question": r["question"], "gold": gold,
                        "predicted": pred, "generation": r["generation"]})
        if len(out) == MAX_FAILURES:
            break
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[list[str]]:
    return [header] + [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]


def sections(metrics: dict, run_dir: Path) -> list[tuple[str, list[list[str]] | str]]:
    """The report as (title, table or text) pairs; markdown and HTML render the same list."""
    tasks, models = list(metrics["tasks"]), metrics["models"]
    primary = _table(["model"] + [f"{t} ({PRIMARY[metrics['tasks'][t]['kind']]})" for t in tasks],
                     [[m] + [metrics["results"][m][t][PRIMARY[metrics["tasks"][t]["kind"]]] for t in tasks] for m in models])
    full = _table(["model", "task", "metric", "value"],
                  [[m, t, k, v] for m in models for t in tasks for k, v in metrics["results"][m][t].items()])
    out: list[tuple[str, list[list[str]] | str]] = [("모델 × 과제 (주 지표)", primary), ("전체 지표", full)]
    if metrics["forgetting"]:
        out.append(("망각 점검 (기준 모델 대비 변화)", _table(
            ["model", "task", "metric", "delta"],
            [[m, t, k, v] for m, per in metrics["forgetting"].items() for t, d in per.items() for k, v in d.items()])))
    else:
        out.append(("망각 점검 (기준 모델 대비 변화)", f"기준 모델 {metrics['base']} 하나만 평가되어 비교할 모델이 없습니다."))
    if metrics["training"]:
        present = {k for c in metrics["training"].values() for k in c}
        keys = [k for k in COST_COLUMNS if k in present] + sorted(present - set(COST_COLUMNS))
        out.append(("학습 단계별 비용과 시간", _table(["model"] + keys, [[m] + [c.get(k, "") for k in keys] for m, c in metrics["training"].items()])))
    else:
        out.append(("학습 단계별 비용과 시간", "평가한 모델 중 kofin 학습 실행 디렉터리(manifest)가 있는 모델이 없습니다."))
    for m in models:
        for t in tasks:
            rows = failures(metrics, run_dir, m, t)
            if rows:
                out.append((f"오답 사례: {m} / {t}", _table(
                    ["id", "where", "question", "gold", "predicted", "generation"],
                    [[r[k] for k in ("id", "where", "question", "gold", "predicted", "generation")] for r in rows])))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _judge(metrics: dict) -> str:
    rag = any(info["kind"] == "rag" for info in metrics["tasks"].values())
    return f" · citation judge: {metrics['citation_judge']}" if rag and metrics.get("citation_judge") else ""


def render_markdown(metrics: dict, parts: list, charts: list[Path]) -> str:
    lines = ["# kofin 평가 보고서", "", f"models: {', '.join(metrics['models'])} · base: {metrics['base']}{_judge(metrics)}", ""]
    lines += [f"![{c.stem}](charts/{c.name})" for c in charts] + [""]
    for title, body in parts:
        lines += [f"## {title}", ""]
        if isinstance(body, str):
            lines += [body, ""]
            continue
        lines.append("| " + " | ".join(_md_cell(h) for h in body[0]) + " |")
        lines.append("|" + " --- |" * len(body[0]))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body[1:]]
        lines.append("")
    return "\n".join(lines)


def render_html(metrics: dict, parts: list, charts: list[Path]) -> str:
    esc = html.escape
    body = [f"<h1>kofin 평가 보고서</h1><p>models: {esc(', '.join(metrics['models']))} · base: {esc(metrics['base'])}"
            f"{esc(_judge(metrics))}</p>"]
    for c in charts:
        data = base64.b64encode(c.read_bytes()).decode()
        body.append(f'<figure><img alt="{esc(c.stem)}" src="data:image/png;base64,{data}"></figure>')
    for title, part in parts:
        body.append(f"<h2>{esc(title)}</h2>")
        if isinstance(part, str):
            body.append(f"<p>{esc(part)}</p>")
            continue
        head = "".join(f"<th>{esc(h)}</th>" for h in part[0])
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in part[1:])
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:'Noto Sans KR','Malgun Gothic','Apple SD Gothic Neo',sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}")
    return (f'<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8"><title>kofin 평가 보고서</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def build_report(run_dir: Path) -> list[Path]:
    """Write charts/, report.md and report.html into `run_dir` (which holds metrics.json and records/)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    (run_dir / "charts").mkdir(exist_ok=True)
    charts = [bar_chart(metrics, run_dir / "charts" / "tasks.png")]
    for extra in (forgetting_chart(metrics, run_dir / "charts" / "forgetting.png"),
                  recall_chart(metrics, run_dir / "charts" / "retrieval_recall.png")):
        charts += [extra] if extra else []
    parts = sections(metrics, run_dir)
    # Rebuilt in place by `build_report(run_dir)` too: a reader never sees half a report.
    atomic_write_text(run_dir / "report.md", render_markdown(metrics, parts, charts))
    atomic_write_text(run_dir / "report.html", render_html(metrics, parts, charts))
    return [run_dir / "report.md", run_dir / "report.html", *charts]
