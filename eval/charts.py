"""The eval report's charts: one per metric family, each on its own axis, with 95% intervals.

Run as: a library; `kofin.eval.report.build_report` draws them into `<run>/charts/`.

A family is metrics that share a scale and a meaning (accuracy, F1, exact match, text overlap,
retrieval, citation quality, citation format): a bar of accuracy beside a bar of MRR on one axis
invites a comparison that means nothing. Each chart shows, per task (its Korean name), each
model's value with its interval as an error bar. Charts are PNGs drawn by matplotlib with a
Korean-capable font (a system one such as NanumGothic / Noto Sans CJK KR when present, else the
Noto Sans CJK font `mplfonts` bundles), embedded in the HTML as data URIs so it opens offline.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from kofin.errors import KofinError

KOREAN_FONT_NAMES = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Malgun Gothic", "AppleGothic", "UnDotum")

# family -> (chart title, axis label, metrics in it); the first metric of a family present in a task is charted.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "preference": ("선호도 (기준 모델 대비 승률, 무승부 0.5)", "승률", ("win_rate", "lc_win_rate")),
    "accuracy": ("정확도 (객관식·분류, 선택지 로그우도)", "정확도", ("acc",)),
    "f1": ("가중 F1 (분류)", "가중 F1", ("weighted_f1",)),
    "exact_match": ("완전일치 (수치 답변)", "완전일치 비율", ("exact_match",)),
    "overlap": ("답변 겹침 (형태소 토큰 F1)", "토큰 F1", ("token_f1",)),
    "retrieval": ("검색 (MRR)", "MRR", ("mrr",)),
    "citation_quality": ("인용 품질 (ALCE 재현율·정밀도)", "비율", ("citation_recall", "citation_precision")),
    "citation_format": ("인용 형식 준수 (모든 사실 문장에 유효한 [n])", "답변 비율", ("citation_format_ok",)),
}
CHART_WIDTH_IN = 6.2  # two charts side by side fit a 1366 px screen at dpi 100


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
    raise KofinError(
        "no font with Korean glyphs found for the report's charts: install the eval extra "
        "(pip install -e .[eval], it bundles Noto Sans CJK) or a system font such as fonts-nanum"
    )


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
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)  # a chart is whole or absent
    return path


def task_label(metrics: dict, task: str) -> str:
    return metrics["tasks"][task].get("description") or task


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def family_chart(metrics: dict, family: str, path: Path, metric_label) -> Path | None:
    """Horizontal bars: one row per (task, metric) of the family, one bar per model, 95% interval whiskers."""
    title, axis, members = FAMILIES[family]
    rows = [(t, m) for t in metrics["tasks"] for m in members if m in metrics["results"][metrics["models"][0]][t]]
    if not rows:
        return None
    plt = _pyplot()
    models = metrics["models"]
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(CHART_WIDTH_IN, 1.5 + 0.32 * len(rows) * max(1, len(models)) ** 0.5 + 0.4))
    for j, model in enumerate(models):
        cells = [metrics["intervals"][model][t][m] for t, m in rows]
        ys = [i + j * height for i in range(len(rows))]
        values = [c["value"] for c in cells]
        err = [[c["value"] - c["low"] for c in cells], [c["high"] - c["value"] for c in cells]]
        ax.barh(ys, values, height, xerr=err, capsize=2, label=model, error_kw={"linewidth": 0.8})
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    label = (
        (lambda t, m: _short(task_label(metrics, t)))
        if len(members) == 1
        else (lambda t, m: f"{_short(task_label(metrics, t), 20)} · {metric_label(m)}")
    )
    ax.set_yticklabels([label(t, m) for t, m in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel(f"{axis} (막대: 값, 선: 95% 구간)")
    ax.set_title(title, fontsize=10)
    # Below the axes: inside, the legend covers the bars of whichever task happens to sit in that corner.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(len(models), 4), frameon=False)
    return _save(plt, fig, path)


def recall_chart(metrics: dict, path: Path) -> Path | None:
    """Recall@k against k for each RAG task and model (the retrieval family's curve)."""
    rag = [t for t, info in metrics["tasks"].items() if info["kind"] == "rag"]
    if not rag:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(CHART_WIDTH_IN, 3.6))
    cutoffs: set[int] = set()
    for t in rag:
        for m in metrics["models"]:
            points = sorted(
                (int(k.split("@")[1]), v) for k, v in metrics["results"][m][t].items() if k.startswith("recall@")
            )
            ax.plot(
                [k for k, _ in points],
                [v for _, v in points],
                marker="o",
                label=f"{m} · {_short(task_label(metrics, t), 20)}",
            )
            cutoffs |= {k for k, _ in points}
    ax.set_xticks(sorted(cutoffs))  # the measured cut-offs, not fractional ticks between them
    ax.set_xlabel("k (검색 문서 수)")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.05)
    ax.set_title("검색 재현율 곡선", fontsize=10)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def draw_charts(metrics: dict, folder: Path, metric_label) -> list[Path]:
    folder.mkdir(exist_ok=True)
    out = [family_chart(metrics, f, folder / f"{f}.png", metric_label) for f in FAMILIES]
    out.append(recall_chart(metrics, folder / "retrieval_recall.png"))
    return [p for p in out if p is not None]
