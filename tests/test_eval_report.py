"""The eval report builds from two tiny-model runs, holds every section, and its charts can draw Hangul."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kofin.config import load_config
from kofin.eval.config import EvalConfig
from kofin.eval.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def second_tiny_model(tmp_path_factory) -> Path:
    """Another tiny model (other seed, 2 layers): a stand-in for a tuned model with its own run manifest."""
    from kofin.tiny import TinyConfig, build_tiny_model

    out = tmp_path_factory.mktemp("tiny2") / "tiny-seed1"
    return build_tiny_model(TinyConfig(output_dir=out, seed=1, num_hidden_layers=2))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    """A complete run directory with the metrics `kofin sft` records (written the way every stage writes one)."""
    from kofin.rundir import open_run

    out = tmp_path_factory.mktemp("sft") / "sft-eeve"
    with open_run("sft", {"output_dir": str(out)}) as run:
        (run.path / "adapter_config.json").write_text("{}")
        run.metrics.update(
            method="qlora",
            world_size=8,
            gpu_hours=1.5,
            tokens_per_s=1234.5,
            peak_gpu_memory_gib_rank0=26.1,
            cost={"amount": 12.0, "currency": "USD", "gpu_hour_price": 8.0},
        )
    return out


@pytest.fixture(scope="module")
def rag_task(tmp_path_factory) -> Path:
    """test_eval_rag's small knowledge base and questions, answered extractively (fast on CPU)."""
    from test_eval_rag import DOCS, QUESTIONS

    root = tmp_path_factory.mktemp("rag")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text, encoding="utf-8")
    (root / "q.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8"
    )
    (root / "mini_rag.yaml").write_text(
        "name: mini_rag\nkind: rag\nformat: laws_questions\npath: q.jsonl\ndocuments: docs\n"
        "answer_with: extractive\nk: [1, 2, 3]\ndescription: 은행 문서 검색\n",
        encoding="utf-8",
    )
    return root / "mini_rag.yaml"


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tiny_model, second_tiny_model, sft_run, rag_task) -> Path:
    out = tmp_path_factory.mktemp("report") / "eval"
    models = f"[{{name: base, base: true}}, {{name: tuned, path: {second_tiny_model}}}]"
    cfg = load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "tiny.yaml",
        [
            f"output_dir={out}",
            f"models={models}",
            f"tasks=[fin_mcq_kmmlu, fin_numeric_qa, general_mcq_ko, {rag_task}]",
            f"training_runs=[{sft_run}]",
            "limit=4",
            "cpu_threads=1",
            "bootstrap_resamples=100",
        ],
    )
    return main(cfg)


def test_report_files_and_every_section(report_run):
    files = {str(p.relative_to(report_run)) for p in report_run.rglob("*") if p.is_file()}
    # One chart per metric family present (no accuracy and MRR on one axis), plus the Recall@k curve.
    assert {
        "report.md",
        "report.html",
        "charts/accuracy.png",
        "charts/exact_match.png",
        "charts/retrieval.png",
        "charts/citation_format.png",
        "charts/retrieval_recall.png",
    } <= files
    assert "charts/tasks.png" not in files and "charts/f1.png" not in files  # no classification task in this run
    md = (report_run / "report.md").read_text(encoding="utf-8")
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    assert titles[:2] == ["## 판정: 기준 모델 대비", "## 과제별 차이 (주 지표)"]  # the verdict comes first
    for title in (
        "## 모델 × 과제: 값 [95% 구간]",
        "## 망각 점검: 일반 과제 (기준 모델 대비)",
        "## 학습 단계별 비용과 시간",
        "## 오답 사례",
    ):
        assert title in titles
    metrics = json.loads((report_run / "metrics.json").read_text(encoding="utf-8"))
    v = metrics["verdict"]["tuned"]
    assert v["better"] + v["worse"] + v["no_difference"] == 4
    verdict = md.split("## 판정: 기준 모델 대비")[1].split("##")[0]
    assert f"| tuned | {v['better']} / 4 | {v['worse']} / 4 | {v['no_difference']} / 4 |" in verdict
    # The tuned tiny model is a `tiny` run on CPU: no GPU-hours, nothing to price.
    assert "| 0 (GPU 미사용) | — (가격 미설정: gpu_price) |" in verdict
    # Each task's primary difference, with its interval and test, under its Korean name.
    acc = metrics["comparisons"]["tuned"]["fin_mcq_kmmlu"]["acc"]
    kmmlu = metrics["tasks"]["fin_mcq_kmmlu"]["description"]
    assert f"| tuned | {kmmlu} | 정확도 |" in md
    assert f"{acc['diff']:+.3f} [{acc['low']:+.2f}, {acc['high']:+.2f}] | {acc['p_value']:.3f} (McNemar) |" in md
    assert "| fin_mcq_kmmlu |" not in md  # task ids never stand in for names
    cell = metrics["intervals"]["tuned"]["fin_numeric_qa"]["exact_match"]
    assert f"{cell['value']:.3f} [{cell['low']:.2f}, {cell['high']:.2f}]" in md and cell["n"] == 4
    # Forgetting: the sign convention is written beside the deltas.
    delta = metrics["results"]["tuned"]["general_mcq_ko"]["acc"] - metrics["results"]["base"]["general_mcq_ko"]["acc"]
    assert metrics["forgetting"]["tuned"]["general_mcq_ko"]["acc"] == pytest.approx(delta)
    assert "변화 = 모델 − 기준 모델" in md and f"| {delta:+.3f} [" in md
    # Training time per stage from the models' run manifests (the tiny builds are `tiny` runs).
    assert metrics["training"]["tuned"]["stage"] == "tiny" and metrics["training"]["tuned"]["wall_time_s"] > 0
    sft = metrics["training"]["sft:sft-eeve"]
    assert (sft["gpu_hours"], sft["tokens_per_s"], sft["cost"], sft["world_size"]) == (1.5, 1234.5, "12.0 USD", 8)
    table = md.split("## 학습 단계별 비용과 시간")[1].split("##")[0]
    assert "| sft:sft-eeve | sft | qlora | 8 | 1.500 | 1234.500 | 26.100 |" in table and "| 12.0 USD |" in table
    assert "None" not in table
    # Drill-down: folded per task, the first failed MCQ of the base model with its gold option text.
    records = [
        json.loads(x)
        for x in (report_run / "records/base/fin_mcq_kmmlu.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    wrong = [r for r in records if r["pred_ll"] != r["gold"]]
    assert f"<summary>오답 사례: {kmmlu} (base {len(wrong)}건, " in md
    assert (
        f"| {wrong[0]['id']} | {wrong[0]['where']} | {wrong[0]['question']} | {wrong[0]['choices'][wrong[0]['gold']]} |"
        in md
    )


def test_recall_curve_and_rag_drill_down(report_run):
    metrics = json.loads((report_run / "metrics.json").read_text(encoding="utf-8"))
    rag = metrics["results"]["base"]["mini_rag"]
    assert rag["recall@1"] == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)
    assert rag["citation_format_ok"] == 1.0  # extractive answers cite every sentence
    md = (report_run / "report.md").read_text(encoding="utf-8")
    assert "![retrieval_recall](charts/retrieval_recall.png)" in md and "· 인용 판정: lexical" in md
    assert f"| 은행 문서 검색 | nDCG@3 | 3 | {rag['ndcg@3']:.3f} [" in md
    assert (
        "| 은행 문서 검색 | 인용 형식 준수 | 3 | 1.000 [" in md
        and "| 은행 문서 검색 | 인용 없는 답변 (낮을수록 좋음) | 3 |" in md
    )
    # Every gold document of every question is retrieved within k=3, so RAG has no drill-down failures.
    assert "오답 사례: 은행 문서 검색" not in md
    from PIL import Image

    with Image.open(report_run / "charts" / "retrieval_recall.png") as png:
        assert (
            png.size[0] > 300 and len(png.convert("L").getcolors(maxcolors=1 << 16) or []) > 10
        )  # a drawn chart, not a blank canvas


def test_undecodable_output_is_named_not_shown():
    from kofin.eval.report import shown_output

    assert shown_output("\ufffd\ufffd\ufffd") == "⟨디코딩 불가 출력: 깨진 문자 3개⟩"
    assert shown_output("정답은 \ufffdA") == "⟨디코딩 불가 출력: 깨진 문자 1개⟩ 정답은 A"
    assert shown_output("가" * 500).endswith("…") and len(shown_output("가" * 500)) == 160
    assert shown_output("줄\n바꿈") == "줄 바꿈"


def test_html_is_self_contained(report_run):
    page = (report_run / "report.html").read_text(encoding="utf-8")
    charts = len(list((report_run / "charts").glob("*.png")))
    assert page.count('src="data:image/png;base64,') == charts >= 5
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched when opened offline
    assert "<h2>망각 점검: 일반 과제 (기준 모델 대비)</h2>" in page and "<h2>학습 단계별 비용과 시간</h2>" in page
    assert page.index("id='verdict'") < page.index("<h2>모델 × 과제")
    assert page.count("<details>") >= 1


def test_chart_font_has_hangul_glyphs():
    from matplotlib.ft2font import FT2Font

    from kofin.eval.report import korean_font

    font = FT2Font(str(korean_font()))
    assert all(font.get_char_index(ord(ch)) for ch in "과제별모델성능망각")
