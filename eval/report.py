"""The internal eval report: `report.md`, a self-contained `report.html` and the charts, from a run's records.

Run as: a library; `kofin eval` writes the report into its run directory after scoring
(`build_report(run_dir)` rebuilds it from `metrics.json` and `records/`).

It answers a reviewer's questions in the order they ask them: the verdict first (each model
against the baseline: how many tasks got significantly better or worse, and what the model cost
to make), then each task's primary-metric difference with its 95% interval and test, every cell
with n and its interval, one chart per metric family (`kofin.eval.charts`), the forgetting check
(sign convention stated), training cost per stage, and each task's failed examples folded away
in `<details>`. Task and metric names are Korean throughout; output the tokenizer could not
decode (U+FFFD) is shown as such, not as garbage. The HTML fits a 1366 px screen without
sideways scrolling and fetches nothing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from kofin.eval.charts import draw_charts, korean_font, task_label
from kofin.eval.cost import COST_COLUMNS  # the training-cost row's names, defined where the row is built
from kofin.eval.scoring import LOWER_IS_BETTER
from kofin.eval.verdict import BETTER, PRIMARY, WORSE, direction

__all__ = ["build_report", "korean_font"]

MAX_FAILURES = 5  # per model and task in the drill-down
MAX_CELL_CHARS = 160
METRIC_LABELS = {
    "acc": "정확도",
    "acc_norm": "정확도(길이 정규화)",
    "acc_gen": "정확도(생성 답변)",
    "weighted_f1": "가중 F1",
    "weighted_f1_gen": "가중 F1(생성 답변)",
    "exact_match": "완전일치",
    "token_f1": "토큰 F1",
    "rouge_l": "ROUGE-L",
    "bertscore_f1": "BERTScore F1",
    "mrr": "MRR",
    "citation_recall": "인용 재현율",
    "citation_precision": "인용 정밀도",
    "citation_format_ok": "인용 형식 준수",
    "citation_out_of_range": "범위 밖 인용 답변",
    "citation_none": "인용 없는 답변",
    "win_rate": "승률",
    "lc_win_rate": "길이 보정 승률",
    "position_bias_rate": "위치 편향률",
    "unparsed_verdicts": "판정 형식 위반",
}
COST_LABELS = {
    "stage": "단계",
    "method": "방법",
    "world_size": "GPU 수",
    "gpu_hours": "GPU-시간",
    "gpu_hours_estimated": "GPU-시간 추정",
    "tokens_per_s": "토큰/초",
    "tokens_per_s_per_gpu": "토큰/초/GPU",
    "tokens_total": "토큰 합계",
    "peak_gpu_memory_gib_rank0": "최대 GPU 메모리(GiB, rank0)",
    "peak_gpu_memory_gib": "최대 GPU 메모리(GiB)",
    "peak_rss_gib": "최대 RSS(GiB)",
    "train_runtime_s": "학습 시간(초)",
    "wall_time_s": "총 시간(초)",
    "cost": "비용",
}
VERDICT_WORDS = {BETTER: "나아짐", WORSE: "나빠짐", "no_difference": "유의차 없음"}

# A report is a list of blocks that markdown and HTML render alike.
Table = list[list[str]]
Block = tuple[str, str] | tuple[str, Table] | tuple[str, str, list]


def metric_label(name: str) -> str:
    if "@" in name:
        head, k = name.split("@")
        return {"recall": "재현율", "ndcg": "nDCG"}.get(head, head) + f"@{k}"
    return METRIC_LABELS.get(name, name)


def _num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "예" if v else "아니오"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(cell: dict) -> str:
    return f"{cell['value']:.3f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def _diff(test: dict) -> str:
    return f"{test['diff']:+.3f} [{test['low']:+.2f}, {test['high']:+.2f}]"


def _p(test: dict) -> str:
    return f"{test['p_value']:.3f} ({'McNemar' if test['test'] == 'mcnemar' else '대응 부트스트랩'})"


def _money(cost: dict | None) -> tuple[str, str]:
    """(GPU-hours, money) of a model's lineage for the verdict table."""
    if not cost or not cost.get("stages"):
        return "0 (학습 기록 없음)", "—"
    mark = " (추정)" if cost.get("estimated") else ""
    hours = f"{cost['gpu_hours']:.3f}{mark}" if cost["gpu_hours"] else "0 (GPU 미사용)"
    money = (
        f"{cost['cost']:,.2f} {cost['currency']}{mark}"
        if cost.get("cost") is not None
        else "— (가격 미설정: gpu_price)"
    )
    return hours, money


def shown_output(text: str) -> str:
    """A generation as a table cell: undecodable bytes named, not shown as U+FFFD runs; long text cut."""
    text = " ".join(str(text).split())
    bad = text.count("\ufffd")
    if bad:
        rest = text.replace("\ufffd", "").strip()
        text = f"⟨디코딩 불가 출력: 깨진 문자 {bad}개⟩" + (f" {rest}" if rest else "")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def _records(run_dir: Path, model: str, task: str) -> list[dict]:
    path = run_dir / "records" / model / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failures(metrics: dict, run_dir: Path, model: str, task: str) -> tuple[int, list[dict[str, str]]]:
    """How many examples the model got wrong (by the task's primary scoring), and the first MAX_FAILURES."""
    kind = metrics["tasks"][task]["kind"]
    out: list[dict[str, str]] = []
    wrong_total = 0
    for r in _records(run_dir, model, task):
        if kind == "rag":  # the gold document was not retrieved at all
            wrong, gold, pred = (
                not set(r["gold_ids"]) & set(r["retrieved"]),
                ", ".join(r["gold_ids"]),
                ", ".join(r["retrieved"][:3]),
            )
        elif kind == "pairwise":  # the judge preferred the baseline's answer (the baseline itself has no failures)
            wrong = r["judgement"]["score"] < 0.5
            gold, pred = str(r["gold"]), " / ".join(g["verdict"] or "판정 없음" for g in r["judgement"]["games"])
        elif kind == "numeric_qa":
            wrong, gold, pred = not r["exact_match"], str(r["gold"]), r["generation"]
        else:
            wrong, gold, pred = r["pred_ll"] != r["gold"], r["choices"][r["gold"]], r["choices"][r["pred_ll"]]
        wrong_total += bool(wrong)
        if wrong and len(out) < MAX_FAILURES:
            out.append(
                {
                    "id": r["id"],
                    "where": r["where"],
                    "question": r["question"],
                    "gold": gold,
                    "predicted": pred,
                    "generation": r["generation"],
                }
            )
    return wrong_total, out


def _unparsed_generations(run_dir: Path, model: str, task: str) -> tuple[int, int]:
    records = _records(run_dir, model, task)
    return sum(r.get("pred_gen") is None for r in records), len(records)


def verdict_blocks(metrics: dict) -> list[Block]:
    base, others = metrics["base"], [m for m in metrics["models"] if m != metrics["base"]]
    if not others:
        return [("h2", "판정: 기준 모델 대비"), ("p", f"기준 모델 {base} 하나만 평가되어 비교할 모델이 없습니다.")]
    n_tasks = len(metrics["tasks"])
    rows = [["모델", "나아진 과제", "나빠진 과제", "유의차 없음", "GPU-시간", "비용"]]
    for m in others:
        v = metrics["verdict"][m]
        rows.append(
            [
                m,
                f"{v[BETTER]} / {n_tasks}",
                f"{v[WORSE]} / {n_tasks}",
                f"{v['no_difference']} / {n_tasks}",
                *_money(v["cost"]),
            ]
        )
    note = (
        f"각 과제의 주 지표에서 모델 − 기준 모델({base})의 차이를 같은 예제끼리 짝지어 검정했습니다 "
        "(예제별 정오: McNemar 정확 검정, 그 밖의 지표: 대응 부트스트랩). p < 0.05이면 유의. "
        "비용은 그 모델을 만든 모든 학습 단계(manifest)의 합입니다."
    )
    detail = [["모델", "과제", "지표", "기준", "모델 값", "차이 [95% 구간]", "p (검정)", "판정"]]
    for m in others:
        for t, info in metrics["tasks"].items():
            k = PRIMARY[info["kind"]]
            test = metrics["comparisons"][m][t][k]
            detail.append(
                [
                    m,
                    task_label(metrics, t),
                    metric_label(k),
                    _ci(metrics["intervals"][base][t][k]),
                    _ci(metrics["intervals"][m][t][k]),
                    _diff(test),
                    _p(test),
                    VERDICT_WORDS[direction(k, test)],
                ]
            )
    return [
        ("h2", "판정: 기준 모델 대비"),
        ("verdict", rows),
        ("p", note),
        ("h2", "과제별 차이 (주 지표)"),
        ("table", detail),
    ]


def cell_blocks(metrics: dict, run_dir: Path) -> list[Block]:
    models = metrics["models"]
    rows = [["과제", "지표", "n", *models]]
    notes = []
    for t, info in metrics["tasks"].items():
        for k in metrics["results"][models[0]][t]:
            cells = [metrics["intervals"][m][t][k] for m in models]
            rows.append(
                [
                    task_label(metrics, t),
                    metric_label(k) + (" (낮을수록 좋음)" if k in LOWER_IS_BETTER else ""),
                    str(cells[0]["n"]),
                    *(_ci(c) for c in cells),
                ]
            )
        if info["kind"] in ("mcq", "classification"):
            for m in models:
                unparsed, n = _unparsed_generations(run_dir, m, t)
                if unparsed:
                    notes.append(
                        f"{m} · {task_label(metrics, t)}: 생성 답변 {n}개 중 {unparsed}개에서 선택지를 읽어 내지 "
                        "못해 오답으로 셌습니다 (정확도(생성 답변)가 낮은 이유)."
                    )
    out: list[Block] = [
        ("h2", "모델 × 과제: 값 [95% 구간]"),
        (
            "p",
            "비율 지표(정확도, 완전일치, 인용 형식)는 Wilson 구간, 그 밖의 지표는 예제 부트스트랩 "
            f"({metrics.get('resamples', 1000)}회) 구간입니다. n은 예제 수입니다.",
        ),
        ("table", rows),
    ]
    if notes:
        out.append(("details", f"생성 답변 해석 실패 ({len(notes)}건)", [("list", "\n".join(notes))]))
    return out


def forgetting_blocks(metrics: dict) -> list[Block]:
    general = [t for t, info in metrics["tasks"].items() if info["group"] == "general"]
    head: list[Block] = [("h2", "망각 점검: 일반 과제 (기준 모델 대비)")]
    if not metrics["forgetting"]:
        return head + [("p", f"기준 모델 {metrics['base']} 하나만 평가되었거나 일반 과제가 없어 비교할 것이 없습니다.")]
    rows = [["모델", "과제", "지표", "변화 [95% 구간]", "p (검정)", "판정"]]
    for m in metrics["forgetting"]:
        for t in general:
            for k in metrics["forgetting"][m][t]:
                test = metrics["comparisons"][m][t][k]
                word = VERDICT_WORDS[direction(k, test)]
                rows.append(
                    [
                        m,
                        task_label(metrics, t),
                        metric_label(k),
                        _diff(test),
                        _p(test),
                        "잊음" if word == VERDICT_WORDS[WORSE] else word,
                    ]
                )
    sign = (
        "변화 = 모델 − 기준 모델. 높을수록 좋은 지표에서 음수는 잊은 것(망각), 양수는 나아진 것입니다. "
        "구간이 0을 포함하면 이 예제 수로는 차이를 말할 수 없습니다."
    )
    return head + [("p", sign), ("table", rows)]


def preference_blocks(metrics: dict) -> list[Block]:
    out: list[Block] = []
    for t, info in (metrics.get("pairwise") or {}).items():
        rows = [
            [
                "모델",
                "승률 [95% 구간]",
                "길이 보정 승률 [95% 구간]",
                "Bradley-Terry 강도 [95% 구간]",
                "위치 편향률",
                "판정 형식 위반",
            ]
        ]
        for m in metrics["models"]:
            cells = metrics["intervals"][m][t]
            bt = info["bradley_terry"][m]
            rows.append(
                [
                    m + (" (기준)" if m == metrics["base"] else ""),
                    _ci(cells["win_rate"]),
                    _ci(cells["lc_win_rate"]),
                    f"{bt['strength']:+.3f} [{bt['low']:+.2f}, {bt['high']:+.2f}]",
                    f"{cells['position_bias_rate']['value']:.3f}",
                    f"{cells['unparsed_verdicts']['value']:.3f}",
                ]
            )
        note = (
            f"심사 모델: {info['judge']} · 각 질문을 답변 위치를 바꿔 두 번 심사했고, "
            "두 판정이 위치에 따라 뒤집히면 무승부로 셌습니다 (위치 편향률). "
            "승률은 기준 모델 대비(무승부 0.5), Bradley-Terry 강도는 기준 모델 0의 로그 척도, "
            "길이 보정 승률은 답변 길이 차가 0일 때의 예측 승률입니다(AlpacaEval-LC). "
            "한국어 심사 프롬프트는 metrics.json의 "
            f"pairwise.{t}.judge_template에 있습니다."
        )
        out += [("h2", f"선호도: {task_label(metrics, t)}"), ("table", rows), ("p", note)]
    return out


def cost_blocks(metrics: dict) -> list[Block]:
    head: list[Block] = [("h2", "학습 단계별 비용과 시간")]
    if not metrics["training"]:
        return head + [("p", "평가한 모델 중 kofin 학습 실행 디렉터리(manifest)가 있는 모델이 없습니다.")]
    present = {k for c in metrics["training"].values() for k in c}
    cols = [k for k in COST_COLUMNS if k in present and k != "gpu_hours_estimated"]
    cols += sorted(present - set(COST_COLUMNS))
    rows = [["실행"] + [COST_LABELS.get(k, k) for k in cols]]
    for name, c in metrics["training"].items():
        row = [name]
        for k in cols:
            v = c.get(k)
            if k == "gpu_hours" and v is not None:
                row.append(
                    "0 (GPU 미사용)" if not v else f"{v:.3f}" + (" (추정)" if c.get("gpu_hours_estimated") else "")
                )
            else:
                row.append(_num(v))
        rows.append(row)
    note = (
        "GPU-시간은 학습 단계가 기록한 값, 없으면 총 시간 × 메모리를 쓴 GPU 수(추정)입니다. 비용은 기록된 값, "
        "없으면 GPU-시간 × eval 설정의 gpu_price(추정)이며 가격이 없으면 '—'입니다."
    )
    return head + [("table", rows), ("p", note)]


def failure_blocks(metrics: dict, run_dir: Path) -> list[Block]:
    out: list[Block] = [("h2", "오답 사례")]
    for t in metrics["tasks"]:
        inner: list[Block] = []
        counts = []
        for m in metrics["models"]:
            total, rows = failures(metrics, run_dir, m, t)
            counts.append(f"{m} {total}건")
            if rows:
                inner.append(("p", f"{m}: 오답 {total}건 중 {len(rows)}건"))
                inner.append(
                    (
                        "table",
                        [["id", "위치", "질문", "정답", "예측", "생성 답변"]]
                        + [
                            [
                                r["id"],
                                r["where"],
                                shown_output(r["question"]),
                                shown_output(r["gold"]),
                                shown_output(r["predicted"]),
                                shown_output(r["generation"]),
                            ]
                            for r in rows
                        ],
                    )
                )
        if inner:
            out.append(("details", f"오답 사례: {task_label(metrics, t)} ({', '.join(counts)})", inner))
    if len(out) == 1:
        out.append(("p", "오답이 없습니다."))
    return out


def blocks(metrics: dict, run_dir: Path, charts: list[Path]) -> list[Block]:
    judge = any(i["kind"] == "rag" for i in metrics["tasks"].values()) and metrics.get("citation_judge")
    intro = f"모델: {', '.join(metrics['models'])} · 기준 모델: {metrics['base']}" + (
        f" · 인용 판정: {judge}" if judge else ""
    )
    out: list[Block] = [("h1", "kofin 평가 보고서"), ("p", intro)]
    out += verdict_blocks(metrics)
    out += preference_blocks(metrics)
    out += cell_blocks(metrics, run_dir)
    out += [("h2", "지표군별 차트"), ("charts", "\n".join(str(c) for c in charts))]
    out += forgetting_blocks(metrics) + cost_blocks(metrics) + failure_blocks(metrics, run_dir)
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows[1:]] + [""]


def render_markdown(parts: list[Block]) -> str:
    lines: list[str] = []
    for block in parts:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind in ("p", "list"):
            lines += [f"- {x}" for x in str(block[1]).splitlines()] + [""] if kind == "list" else [str(block[1]), ""]
        elif kind in ("table", "verdict"):
            lines += _md_table(block[1])  # type: ignore[arg-type]
        elif kind == "charts":
            lines += [f"![{Path(c).stem}](charts/{Path(c).name})" for c in str(block[1]).splitlines()] + [""]
        elif kind == "details":
            lines += ["<details>", f"<summary>{html.escape(block[1])}</summary>", ""]  # type: ignore[arg-type]
            lines += render_markdown(block[2]).splitlines() + ["</details>", ""]  # type: ignore[misc]
    return "\n".join(lines)


def _html_table(rows: Table, cls: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    attrs = f" id={cls!r} class={cls!r}" if cls else ""
    return f'<div class="wrap"><table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _html_blocks(parts: list[Block]) -> str:
    esc, out = html.escape, []
    for block in parts:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{esc(str(block[1]))}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(str(block[1]))}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(x)}</li>" for x in str(block[1]).splitlines()) + "</ul>")
        elif kind == "table":
            out.append(_html_table(block[1]))  # type: ignore[arg-type]
        elif kind == "verdict":
            out.append(_html_table(block[1], "verdict"))  # type: ignore[arg-type]
        elif kind == "charts":
            figs = []
            for c in str(block[1]).splitlines():
                data = base64.b64encode(Path(c).read_bytes()).decode()
                figs.append(f'<figure><img alt="{esc(Path(c).stem)}" src="data:image/png;base64,{data}"></figure>')
            out.append(f'<div class="charts">{"".join(figs)}</div>')
        elif kind == "details":
            out.append(f"<details><summary>{esc(str(block[1]))}</summary>{_html_blocks(block[2])}</details>")  # type: ignore[misc]
    return "".join(out)


# 1366 px wide screens: the page is at most 1280 px, tables wrap their text instead of widening the page.
STYLE = (
    "*{box-sizing:border-box}"
    "body{font-family:'Noto Sans KR','Malgun Gothic','Apple SD Gothic Neo','kofin-ko',sans-serif;"
    "margin:0 auto;padding:12px 20px;max-width:1280px;font-size:14px;line-height:1.45;overflow-wrap:anywhere}"
    "h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:18px 0 6px}p{margin:4px 0 8px}"
    ".wrap{max-width:100%;overflow-x:auto}table{border-collapse:collapse;margin:6px 0;font-size:13px;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top;word-break:break-word}th{background:#f3f3f3}"
    "table.verdict{font-size:15px}table.verdict td:first-child{font-weight:bold}"
    ".charts{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;max-width:calc(50% - 4px);min-width:420px}"
    "img{max-width:100%;height:auto}details{margin:6px 0}summary{cursor:pointer;font-weight:bold}"
)


def embedded_font_css(text: str) -> str:
    """@font-face with the chart font cut down to the characters the page uses (a few hundred KB at most):
    a reviewer's machine without a Korean font still reads the page, and nothing is fetched to do it."""
    import io

    from fontTools import subset

    path = korean_font()
    options = subset.Options()
    font = subset.load_font(str(path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(set(text) - set("<>\n"))))
    subsetter.subset(font)
    data = io.BytesIO()
    subset.save_font(font, data, options)
    mime = "font/otf" if path.suffix.lower() == ".otf" else "font/ttf"
    return (
        f"@font-face{{font-family:'kofin-ko';src:url(data:{mime};base64,{base64.b64encode(data.getvalue()).decode()})}}"
    )


def render_html(parts: list[Block]) -> str:
    body = _html_blocks(parts)
    visible = html.unescape(re.sub(r'src="data:[^"]*"', "", body))  # the page's text, not the charts' base64
    style = embedded_font_css(visible + "kofin 평가 보고서") + STYLE
    return (
        '<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>kofin 평가 보고서</title><style>{style}</style></head><body>{body}</body></html>\n"
    )


def build_report(run_dir: Path) -> list[Path]:
    """Write charts/, report.md and report.html into `run_dir` (which holds metrics.json and records/)."""
    from kofin.rundir import atomic_write_text

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    charts = draw_charts(metrics, run_dir / "charts", metric_label)
    parts = blocks(metrics, run_dir, charts)
    # Rebuilt in place by `build_report(run_dir)` too: a reader never sees half a report.
    atomic_write_text(run_dir / "report.md", render_markdown(parts))
    atomic_write_text(run_dir / "report.html", render_html(parts))
    return [run_dir / "report.md", run_dir / "report.html", *charts]
