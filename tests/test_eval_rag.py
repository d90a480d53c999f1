"""RAG tasks: retrieval metrics against gold documents, answer correctness and citation quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_serve_answers import DOCS as SERVE_DOCS

from kofin.config import ConfigError, load_config
from kofin.eval.scoring import score_examples, task_metrics
from kofin.eval.tasks import TaskSpec, load_examples, load_task

# kofin ask's test documents (anyone may read them), plus one of our own.
DOCS = {name: text for name, text in SERVE_DOCS.items() if "groups: [all]" in text} | {
    "card.md": "---\ntitle: 가람카드 분실 신고 안내\ngroups: [all]\n---\n# 가람카드 분실 신고 안내\n"
    "카드를 분실하면 즉시 고객센터에 신고한다. 신고 접수 후 발생한 부정사용은 은행이 보상한다.\n",
}
QUESTIONS = [
    {
        "qid": "q1",
        "question": "정기예금을 만기 전에 해지하면 어떤 이율이 적용되나요?",
        "gold": ["deposit.md"],
        "answer": "만기 전에 해지하면 약정이율 대신 중도해지이율을 적용합니다.",
    },
    {
        "qid": "q2",
        "question": "신용대출 중도상환수수료는 얼마인가요?",
        "gold": ["loan.md"],
        "answer": "대출 실행 후 3년 이내에 상환하면 중도상환수수료 1.2%를 받습니다.",
    },
    {
        "qid": "q3",
        "question": "카드 분실 신고 후 부정사용은 누가 보상하나요?",
        "gold": ["card.md", "deposit.md"],
        "answer": "신고 접수 후 발생한 부정사용은 은행이 보상합니다.",
    },
]


@pytest.fixture(scope="module")
def rag_task(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rag")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    (root / "q.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8"
    )
    task = root / "rag.yaml"
    task.write_text(
        "name: mini_rag\nkind: rag\nformat: laws_questions\npath: q.jsonl\ndocuments: docs\n"
        "answer_with: extractive\nk: [1, 2, 3]\n",
        encoding="utf-8",
    )
    return task


def test_extractive_rag_scores_by_hand(rag_task):
    spec = load_task(rag_task)
    records = score_examples(spec, load_examples(spec), backend=None)
    by_id = {r["id"]: r for r in records}
    assert [by_id[q]["recall@1"] for q in ("q1", "q2")] == [1.0, 1.0]  # the gold document ranks first
    q3 = by_id["q3"]
    assert q3["retrieved"][0] == "card.md" and q3["recall@1"] == 0.5  # one of two gold documents at k=1
    # The extractive answer quotes its sources, so every sentence is supported and every citation needed.
    for r in records:
        assert r["citation_recall"] == 1.0 and r["citation_precision"] == 1.0, r["generation"]
        assert "[1]" in r["generation"]
    # The answer quotes three sentences, the reference is one of them: F1 is partial, not 0 or 1.
    from kofin.eval.metrics import token_f1

    assert by_id["q1"]["token_f1"] == pytest.approx(
        token_f1(by_id["q1"]["generation"], QUESTIONS[0]["answer"]), abs=1e-6
    )
    assert 0.3 < by_id["q1"]["token_f1"] < 1
    m = task_metrics(spec, records)
    assert m["recall@1"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["mrr"] == pytest.approx(sum(r["reciprocal_rank"] for r in records) / 3)
    assert set(m) == {
        "recall@1",
        "recall@2",
        "recall@3",
        "mrr",
        "ndcg@3",
        "token_f1",
        "rouge_l",
        "citation_recall",
        "citation_precision",
        "citation_format_ok",
        "citation_out_of_range",
        "citation_none",
    }
    # Extractive answers cite every sentence with an id in range: fully format-compliant.
    assert (m["citation_format_ok"], m["citation_out_of_range"], m["citation_none"]) == (1.0, 0.0, 0.0)


def test_model_answers_go_through_citation_checks(rag_task, tiny_model):
    from kofin.eval.engine import TransformersBackend

    spec = load_task(rag_task).model_copy(update={"answer_with": "model", "max_new_tokens": 16})
    records = score_examples(
        spec, load_examples(spec)[:1], TransformersBackend(tiny_model, device="cpu", cpu_threads=1)
    )
    r = records[0]
    assert r["recall@1"] == 1.0  # retrieval does not depend on the model
    # The tiny model writes no [n] citations: nothing is supported by a citation.
    assert r["citation_recall"] == 0.0 and isinstance(r["generation"], str)
    # ... so it fails the citation format: the answer cites nothing, and is not compliant.
    assert r["citation_none"] and not r["citation_format_ok"]


def test_rag_task_needs_one_knowledge_source(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\nkind: rag\nformat: laws_questions\npath: q.jsonl\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="rag tasks need exactly one of kb:"):
        load_config(TaskSpec, bad)
