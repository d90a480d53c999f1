"""The eval report as a reviewer opens it: Debian's headless Chromium at 1366 x 768, through Playwright's API.

The verdict table is on screen without scrolling, the page never scrolls sideways, the failure
tables start folded, and opening the file fetches nothing. Needs /usr/bin/chromium (`make browser`,
which `make test` runs); Playwright launches that executable and never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_eval_report import rag_task, second_tiny_model, sft_run  # noqa: F401  (fixtures)

from kofin.config import load_config
from kofin.eval.config import EvalConfig
from kofin.eval.run import main

ROOT = Path(__file__).resolve().parents[1]
SCREEN = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, tiny_model, second_tiny_model, sft_run, rag_task) -> Path:  # noqa: F811
    """Three models on every kind of task (mcq, classification, numeric QA, RAG, general), with training runs."""
    root = tmp_path_factory.mktemp("browser")
    out = root / "eval"
    pairwise = root / "pw.yaml"  # the bundled Korean prompts, answered briefly (the tiny model judges, on CPU)
    pairwise.write_text(
        f"include: {ROOT / 'eval/tasks/pairwise_fin_ko.yaml'}\n"
        f"path: {ROOT / 'eval/tasks/examples/pairwise_fin_ko.jsonl'}\n"
        "max_new_tokens: 6\n",
        encoding="utf-8",
    )
    models = (
        f"[{{name: base, base: true}}, {{name: tuned, path: {second_tiny_model}}}, "
        f"{{name: tuned-again, path: {second_tiny_model}}}]"
    )
    cfg = load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "tiny.yaml",
        [
            f"output_dir={out}",
            f"models={models}",
            f"training_runs=[{sft_run}]",
            f"tasks=[{pairwise}, fin_mcq_kmmlu, fin_sentiment_korfin_asc, fin_numeric_qa, general_mcq_ko, "
            f"general_gsm8k_ko, {rag_task}]",
            f"pairwise_judge={{path: {tiny_model}, max_new_tokens: 4}}",
            "limit=3",
            "cpu_threads=1",
            "bootstrap_resamples=50",
        ],
    )
    return main(cfg) / "report.html"


def test_verdict_visible_without_scrolling_and_no_sideways_scroll(browser, report_html, tmp_path):
    context = browser.new_context(viewport=SCREEN, locale="ko-KR")
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.goto(report_html.as_uri())
    page.wait_for_load_state("load")
    box = page.locator("table#verdict").bounding_box()
    assert box is not None, "no verdict table on the page"
    assert box["y"] >= 0 and box["y"] + box["height"] <= SCREEN["height"], (
        f"verdict table not fully on the first screen: {box}"
    )
    assert page.locator("table#verdict tbody tr").count() == 2  # tuned and tuned-again against base
    assert "판정" in page.locator("h2").first.inner_text()
    assert page.locator("h2", has_text="선호도: 금융 상담 답변 선호도").count() == 1  # Bradley-Terry and position bias
    # Nothing wider than the screen: no sideways scrolling at 1366 px.
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= SCREEN["width"], f"page is {scroll_width} px wide"
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName).slice(0, 5)""")
    assert not wide, f"elements beyond the right edge: {wide}"
    # Failure tables are folded until opened.
    details = page.locator("details:has(table)")
    assert details.count() >= 1 and not details.first.locator("table").first.is_visible()
    details.first.locator("summary").click()
    assert details.first.locator("table").first.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= SCREEN["width"]
    # Every chart decoded (an image with a size), all from data: URIs; the file fetched nothing else.
    sizes = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().right])")
    assert len(sizes) >= 5 and all(w > 300 and right <= SCREEN["width"] for w, right in sizes)
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    shot = tmp_path / "first_screen.png"
    page.screenshot(path=str(shot))  # what a reviewer sees first
    from PIL import Image

    with Image.open(shot) as png:
        assert png.size == (SCREEN["width"], SCREEN["height"])
        assert len(png.convert("L").getcolors(maxcolors=1 << 16) or []) > 20  # text and tables, not a blank page
    context.close()
