"""Exported tasks give lm-evaluation-harness the same accuracy kofin reports, on the same examples."""

from __future__ import annotations

import json

import pytest
import yaml

from kofin.eval.engine import TransformersBackend
from kofin.eval.export import export_lm_eval
from kofin.eval.scoring import score_examples, task_metrics
from kofin.eval.tasks import TaskError, load_examples, load_task


def test_export_writes_the_exact_prompts(tmp_path):
    paths = export_lm_eval(None, tmp_path)
    assert sorted(p.name for p in paths) == [
        "kofin_fin_headline.yaml",
        "kofin_fin_mcq_fmmlu.yaml",
        "kofin_fin_mcq_kmmlu.yaml",
        "kofin_fin_ner_cls.yaml",
        "kofin_fin_sentiment.yaml",
        "kofin_fin_sentiment_fiqa.yaml",
        "kofin_fin_sentiment_korfin_asc.yaml",
        "kofin_fin_sentiment_nwgi.yaml",
        "kofin_fin_sentiment_tfns.yaml",
        "kofin_general_mcq_ko.yaml",
    ]  # numeric QA, XBRL extraction and RAG generate answers: not exported
    task = yaml.safe_load((tmp_path / "kofin_fin_sentiment.yaml").read_text(encoding="utf-8"))
    assert task["output_type"] == "multiple_choice" and task["doc_to_choice"] == "choices"
    rows = [json.loads(x) for x in (tmp_path / "kofin_fin_sentiment.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[1]["choices"] == ["긍정", "부정", "중립"] and rows[1]["gold"] == 1
    assert rows[1]["prompt"].startswith("다음 금융 뉴스 문장의 감성을 고르세요.\n문장: 연체율이")
    with pytest.raises(TaskError, match="only multiple-choice tasks"):
        export_lm_eval(["fin_numeric_qa"], tmp_path / "x")


def test_lm_eval_gives_kofins_accuracy_on_the_tiny_model(tmp_path, tiny_model):
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is in the eval extra")
    from lm_eval.tasks import TaskManager

    spec = load_task("fin_mcq_fmmlu")
    records = score_examples(
        spec, load_examples(spec), TransformersBackend(tiny_model, batch_size=4, device="cpu", cpu_threads=1)
    )
    ours = task_metrics(spec, records)

    export_lm_eval(["fin_mcq_fmmlu"], tmp_path)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={tiny_model},dtype=float32",
        tasks=["kofin_fin_mcq_fmmlu"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        device="cpu",
        batch_size=4,
        log_samples=True,
    )
    theirs = out["results"]["kofin_fin_mcq_fmmlu"]
    assert theirs["acc,none"] == pytest.approx(ours["acc"])
    assert theirs["acc_norm,none"] == pytest.approx(ours["acc_norm"])
    # Not just the same average: the same log-likelihood for every option of every example.
    samples = sorted(out["samples"]["kofin_fin_mcq_fmmlu"], key=lambda s: s["doc_id"])
    for sample, rec in zip(samples, records, strict=True):
        lls = [resp[0][0] for resp in sample["resps"]]
        assert lls == pytest.approx(rec["logprob"], abs=1e-3)


def test_export_command_line(tmp_path, capsys):
    from kofin.cli import main as kofin

    assert (
        kofin(["eval", "export-lm-eval", str(tmp_path / "out"), "--tasks", "fin_sentiment_korfin_asc", "--limit", "2"])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "wrote 1 lm-eval tasks" in printed
        and f"--include_path {tmp_path / 'out'} --tasks kofin_fin_sentiment_korfin_asc" in printed
    )
    rows = (tmp_path / "out" / "kofin_fin_sentiment_korfin_asc.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 and "대상: 나래전자" in json.loads(rows[1])["prompt"]
    assert kofin(["eval", "export-lm-eval", str(tmp_path / "x"), "--tasks", "kb_rag"]) != 0
    assert "only multiple-choice tasks" in capsys.readouterr().err
