"""Retrieval: access control before ranking, the laws benchmark floor, the langchain retriever."""

from __future__ import annotations

import json
import random

import pytest

from kofin.serve.ingest import IngestConfig
from kofin.serve.ingest import main as ingest
from kofin.serve.kb import load_kb
from kofin.serve.retrieve import HybridRetriever

GROUPS = ["branch", "credit", "compliance", "fx"]
TOPICS = [
    "정기예금 중도해지",
    "주택담보대출 금리",
    "의심거래보고 기준",
    "외화 송금 한도",
    "신용카드 연회비",
    "전결 한도 승인",
    "고객확인 절차",
    "대여금고 이용",
]


@pytest.fixture(scope="module")
def acl_kb(tmp_path_factory):
    """120 documents on shared topics, each readable by a random set of groups (or by all)."""
    rng = random.Random(7)
    rows = []
    for i in range(120):
        topic = TOPICS[i % len(TOPICS)]
        groups = ["all"] if i % 5 == 0 else rng.sample(GROUPS, rng.randint(1, 2))
        rows.append(
            {
                "id": f"D{i:03d}",
                "title": f"{topic} 지침 {i}",
                "text": f"{topic}에 관한 {i}번 문서이다. {topic} 업무는 규정에 따라 처리한다.",
                "metadata": {"groups": groups},
            }
        )
    src = tmp_path_factory.mktemp("acl") / "docs.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kb = src.parent / "kb"
    ingest(IngestConfig(output_dir=kb, inputs=[src]))
    return load_kb(kb), {r["id"]: set(r["metadata"]["groups"]) for r in rows}


def test_no_cross_group_leak_over_random_users_and_queries(acl_kb):
    kb, doc_groups = acl_kb
    retriever = HybridRetriever(kb)
    rng = random.Random(11)
    restricted_seen = 0
    for _ in range(200):
        user_groups = tuple(rng.sample(GROUPS, rng.randint(0, 2)))
        query = rng.choice(TOPICS) + rng.choice(["", " 규정", "은 어떻게 하나요?"])
        hits = retriever.search(query, user_groups, k=20)
        assert hits, query
        for h in hits:
            readable = doc_groups[h.chunk["doc_id"]] & (set(user_groups) | {"all"})
            assert readable, f"user {user_groups} got {h.chunk['doc_id']} of {doc_groups[h.chunk['doc_id']]}"
            restricted_seen += "all" not in doc_groups[h.chunk["doc_id"]]
    assert restricted_seen > 100  # members do get their restricted documents: the filter is not just "all"


def test_user_without_groups_sees_only_open_documents(acl_kb):
    kb, doc_groups = acl_kb
    hits = HybridRetriever(kb).search("의심거래보고 기준", (), k=50)
    assert hits and all("all" in doc_groups[h.chunk["doc_id"]] for h in hits)


def test_langchain_retriever_returns_documents_with_citation_metadata(acl_kb):
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from kofin.serve.retrieve import KofinRetriever

    retriever = KofinRetriever(retriever=HybridRetriever(acl_kb[0]), groups=("compliance",), k=4)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("의심거래보고 기준")
    assert len(docs) == 4 and all(isinstance(d, Document) for d in docs)
    assert {"id", "chunk_id", "title", "section", "page", "score"} <= set(docs[0].metadata)
    assert "의심거래보고" in docs[0].page_content


def _article_ranks(retriever, questions):
    """Rank (1-10) of each question's gold article among distinct articles, None if absent."""
    ranks = []
    for q in questions:
        docs: list[str] = []
        for h in retriever.search(q["question"], k=40):
            if h.chunk["doc_id"] not in docs:
                docs.append(h.chunk["doc_id"])
        ranks.append(next((i for i, d in enumerate(docs[:10], 1) if d in q["gold"]), None))
    return ranks


def test_laws_retrieval_meets_the_targets_on_dev_and_held_out_questions(laws_dir, tmp_path):
    """The issue's targets (R@5 >= 0.95, MRR@10 >= 0.85) with the offline default, on the dev
    questions and on the 80 held-out ones written blind (benchmarks/questions_heldout.jsonl)."""
    from pathlib import Path

    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[laws_dir / "fin_articles.jsonl"], default_groups=["all"]))
    retriever = HybridRetriever(load_kb(tmp_path / "kb"))
    heldout = Path(__file__).resolve().parents[1] / "benchmarks" / "questions_heldout.jsonl"
    for path in (laws_dir / "questions_dev.jsonl", heldout):
        questions = [json.loads(line) for line in open(path, encoding="utf-8")]
        ranks = _article_ranks(retriever, questions)
        recall5 = sum(bool(r and r <= 5) for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        assert recall5 >= 0.95 and mrr >= 0.85, (path.name, recall5, mrr)


def test_everyday_verbs_expand_to_the_statutes_terms_in_any_conjugation():
    from kofin.serve.lexicon import Lexicon

    lexicon = Lexicon()
    for question in ("업무를 외부에 맡길 수 있나요?", "외부에 맡겨서 처리해도 되나요?", "맡기려면 어떻게 하나요?"):
        assert "위탁" in lexicon.expand(question).synonyms, question
    assert "매도" in lexicon.expand("주식을 기한까지 팔지 않으면?").synonyms
    # one-syllable keys match whole morphemes only: 팔 (sell) is not inside 팔십 (eighty)
    assert "매도" not in lexicon.expand("팔십 세 이상 고객의 예금").synonyms
    assert "전자금융거래" in lexicon.expand("인터넷뱅킹 약관이 바뀌면?").synonyms


def test_question_frame_words_are_not_search_terms(acl_kb):
    terms = HybridRetriever(acl_kb[0]).query_terms("의심거래보고는 누구에게 언제 몇 번 해야 하는지 알려주세요")
    assert "의심" in terms and "보고" in terms
    assert not {"누구", "언제", "몇", "알리"} & set(terms)


def test_score_fusion_keeps_a_clear_winner_that_rank_fusion_would_tie(acl_kb):
    """Two equally weighted lists, each with its own first hit: RRF alone ties them; one list's
    first hit is far ahead of the rest of its list, so the blended score puts it first."""
    from kofin.serve.retrieve import RetrievalConfig

    lists = [
        (1.0, ([7, 8, 9, 10], [9.0, 1.0, 0.9, 0.8])),  # 7 towers over its list
        (1.0, ([8, 7, 11, 12], [1.0, 0.99, 0.98, 0.97])),  # a flat list: 8 barely ahead
    ]
    rrf_only = HybridRetriever(acl_kb[0], RetrievalConfig(score_weight=0))._fuse(lists)
    assert rrf_only[7] == pytest.approx(rrf_only[8])
    blended = HybridRetriever(acl_kb[0], RetrievalConfig(score_weight=0.3))._fuse(lists)
    assert blended[7] > blended[8] > blended[9]


def test_a_words_morphemes_do_not_depend_on_what_was_analysed_before():
    """Index and question must split a word the same way, in any process: `kofin ask` runs in a
    fresh process, not in the one that built the index."""
    from kofin.data_ko import korean

    question = "신용협동조합에는 이사와 감사를 각각 몇 명씩 두어야 하나요?"
    korean._word_terms.clear()
    alone = korean.morpheme_terms(question)
    korean._word_terms.clear()
    corpus = (
        "조합원은 총회에서 의결권을 가진다. 이사회는 이사장과 이사로 구성하고 감사는 감사업무를 담당한다. 두어야 한다."
    )
    korean.morpheme_terms_many([corpus * 3, "예금자보호 한도와 중도해지이율을 확인하세요."])
    after = korean.morpheme_terms(question)
    assert alone == after
    assert {"신용", "협동조합", "이사", "감사"} <= set(alone)


def test_the_question_char_vector_is_the_vectorizers_own(acl_kb):
    """KnowledgeBase.char_query skips sklearn's per-call overhead; it must give transform's vector."""
    kb, _ = acl_kb
    for text in ("예금 지침 12번 문서", "몇프로에여?? 예금예금 예금", "ⓐ 없는 낱말 qwerty", ""):
        expected = kb.char_vectorizer.transform([text])
        cols, values = kb.char_query(text)
        got = dict(zip(cols.tolist(), values.tolist(), strict=True))
        assert set(got) == set(expected.indices.tolist()), text
        assert all(
            abs(got[j] - v) < 1e-6 for j, v in zip(expected.indices.tolist(), expected.data.tolist(), strict=True)
        ), text


def test_a_shortened_name_no_document_uses_searches_for_the_name_it_shortens(tmp_path):
    """서금원 is 서민금융진흥원: the two guarantee documents share every other word of the question (and
    the 서 a character n-gram sees), so only the name the question shortens tells them apart (the one
    listed first wins a tie). A
    two-syllable word (이번) is not read as a shortening: ordinary words match by chance (이용자 번호)."""
    from kofin.serve.shortnames import expansion, shortened_words

    rows = [
        {"id": "city", "title": "보증 신청 안내", "text": "서울시청에 보증을 신청할 수 있다. 신청서를 제출한다."},
        {
            "id": "kinfa",
            "title": "보증 신청 안내",
            "text": "서민금융진흥원에 보증을 신청할 수 있다. 신청서를 제출한다.",
        },
        {"id": "user-id", "title": "이용자 번호 안내", "text": "이용자 번호는 가입할 때 정한다."},
    ]
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[tmp_path / "docs.jsonl"], default_groups=["all"]))
    retriever = HybridRetriever(load_kb(tmp_path / "kb"))
    assert any(w.startswith("서민금융진흥원") for w in shortened_words(retriever.kb, "서금원"))
    assert {"서민", "금융", "진흥원"} <= set(expansion(retriever.kb, "서금원"))
    hits = retriever.search("서금원 보증 신청하려면?", ("all",), 2)
    assert hits[0].chunk["doc_id"] == "kinfa", [h.chunk["doc_id"] for h in hits]
    assert expansion(retriever.kb, "보증") == ()  # a word the documents use is searched as itself
    terms = retriever.query_terms("이번 보증 신청은?")
    assert "이용자" not in terms and "번호" not in terms


def test_the_answer_gate_counts_a_word_as_found_where_what_retrieval_searched_for_it_is(tmp_path):
    """The gate's coverage reads a question's word the way retrieval searched for it: 깎나요 is
    found in 감면한다 (a lexicon synonym), 서금원 in 서민금융진흥원 (the name it shortens). A word with
    neither stays missing."""
    from kofin.serve.answer import coverage

    rows = [
        {"id": "fee", "title": "보증료 감면", "text": "서민금융진흥원은 보증료를 감면한다."},
        {"id": "other", "title": "기타", "text": "영업점에서 신청한다."},
    ]
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    ingest(IngestConfig(output_dir=tmp_path / "kb", inputs=[tmp_path / "docs.jsonl"], default_groups=["all"]))
    retriever = HybridRetriever(load_kb(tmp_path / "kb"))
    text = "서민금융진흥원은 보증료를 감면한다."
    assert ("감면",) in retriever.alternatives("깎")
    assert coverage(retriever, "서금원은 보증료를 깎나요?", text) == 1.0
    assert coverage(retriever, "신복위는 보증료를 깎나요?", text) < 1.0  # 신복위 shortens no word here
