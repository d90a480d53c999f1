"""The NEFTune ablation pipeline on CPU: data -> SFT without and with NEFTune (real axolotl) -> eval against the base
with the pairwise and citation-format tasks -> one report whose verdict table names both SFT models.

On the tiny model the numbers mean nothing; what is tested is that the shipped pipeline runs end to end, that the
two SFT runs differ only in neftune_noise_alpha, and that the report holds the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "configs" / "pipeline" / "neftune_ablation_tiny.yaml"


def test_the_shipped_ablation_validates_and_differs_only_in_neftune():
    from kofin.config import load_config
    from kofin.pipeline import PipelineConfig, plan

    steps = plan(load_config(PipelineConfig, PIPELINE), PIPELINE)
    assert [s.step.label for s in steps] == ["data", "sft-plain", "sft-neftune", "eval"]
    plain, noisy = (s.cfg for s in steps[1:3])
    assert plain.training.neftune_noise_alpha is None and noisy.training.neftune_noise_alpha == 5.0
    strip = lambda c: {k: v for k, v in c.model_dump(mode="json").items() if k not in ("output_dir", "training")}  # noqa: E731
    assert strip(plain) == strip(noisy)
    assert {k: v for k, v in plain.training.model_dump().items() if k != "neftune_noise_alpha"} == {
        k: v for k, v in noisy.training.model_dump().items() if k != "neftune_noise_alpha"
    }
    ev = steps[3].cfg
    assert [m.name for m in ev.models] == ["base", "sft", "sft-neftune"] and ev.tasks == ["pairwise_fin_ko", "kb_rag"]
    assert [str(m.path) for m in ev.models[1:]] == [str(plain.output_dir), str(noisy.output_dir)]


def test_the_ablation_runs_on_cpu_and_its_report_holds_the_verdict(tmp_path, axolotl_env):
    from kofin.cli import main as kofin

    runs = tmp_path / "runs"
    pairwise = tmp_path / "pw.yaml"  # the bundled prompts, short answers (CPU)
    pairwise.write_text(
        f"include: {ROOT / 'eval/tasks/pairwise_fin_ko.yaml'}\n"
        f"path: {ROOT / 'eval/tasks/examples/pairwise_fin_ko.jsonl'}\n"
        "max_new_tokens: 8\n",
        encoding="utf-8",
    )
    models = (
        f"[{{name: base, base: true}}, {{name: sft, path: {runs / 'sft-plain'}}}, "
        f"{{name: sft-neftune, path: {runs / 'sft-neftune'}}}]"
    )
    overrides = [
        f"data.output_dir={runs / 'data'}",
        "data.sft.documents.0.max_documents=3",
        "data.dpo.documents.0.max_documents=3",
        *(
            x
            for name in ("sft-plain", "sft-neftune")
            for x in (
                f"{name}.output_dir={runs / name}",
                f"{name}.datasets.0.path={runs / 'data'}",
                f"{name}.training.max_steps=2",
                f"{name}.training.save_steps=2",
            )
        ),
        f"eval.output_dir={runs / 'eval'}",
        f"eval.models={models}",
        f"eval.tasks=[{pairwise}, kb_rag]",
        "eval.limit=2",
        "eval.bootstrap_resamples=20",
    ]
    assert kofin(["pipeline", "--config", str(PIPELINE), *overrides, "--quiet"]) == 0
    axolotl = {
        n: yaml.safe_load((runs / n / "axolotl.yaml").read_text(encoding="utf-8")) for n in ("sft-plain", "sft-neftune")
    }
    assert "neftune_noise_alpha" not in axolotl["sft-plain"] and axolotl["sft-neftune"]["neftune_noise_alpha"] == 5.0
    metrics = json.loads((runs / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["verdict"]) == {"sft", "sft-neftune"}
    for model in ("sft", "sft-neftune"):
        for task in ("pairwise_fin_ko", "kb_rag"):
            assert metrics["comparisons"][model][task]  # every model vs the base on both tasks
        assert "citation_format_ok" in metrics["results"][model]["kb_rag"]
    md = (runs / "eval" / "report.md").read_text(encoding="utf-8")
    verdict = md.split("## 판정: 기준 모델 대비")[1].split("\n## ")[0]
    assert "| sft |" in verdict and "| sft-neftune |" in verdict
    # Their cost of getting there: the SFT runs' recorded GPU-hours (none on CPU) from their manifests.
    assert "0 (GPU 미사용)" in verdict
    assert "## 선호도: 금융 상담 답변 선호도 (기준 모델 대비)" in md
    assert "| sft-neftune | 은행 문서 RAG (검색·답변·인용) | 인용 형식 준수 |" in md  # the metric NEFTune failed on
