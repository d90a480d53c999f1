"""Exact and near-duplicate detection: planted duplicates are found, distinct rows are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from kofin.data_ko.corpus import iter_documents
from kofin.data_ko.dedupe import (
    cross_duplicates,
    exact_duplicates,
    jaccard,
    lsh_bands,
    minhash_signatures,
    near_duplicates,
    shingle_hashes,
)


def distinct_texts(n: int) -> list[str]:
    """Real, different Korean passages: knowledge-base sections."""
    texts = []
    for doc in iter_documents():
        for section in doc.sections():
            if len(section.text) >= 200:
                texts.append(section.text)
    assert len(texts) >= n
    return texts[:n]


def test_exact_duplicates_ignore_case_and_whitespace():
    texts = ["정기예금 금리는 연 2.5%이다.", "COFIX 금리", "정기예금  금리는\n연 2.5%이다. ", "cofix 금리", "다른 문장"]
    assert exact_duplicates(texts) == [(2, 0), (3, 1)]


def test_near_duplicates_find_planted_edits_and_keep_distinct_rows():
    texts = distinct_texts(40)
    base = texts[5]
    edited = base.replace("다.", "습니다.", 1) + " 추가 안내."  # a small edit of a long passage
    planted = texts + [edited, texts[12]]
    found = near_duplicates(planted, threshold=0.8)
    assert found == [(40, 5), (41, 12)]
    assert jaccard(shingle_hashes(base), shingle_hashes(edited)) >= 0.8


def test_near_duplicates_respect_the_threshold():
    a = "가람 스마트 정기예금은 목돈을 한 번에 맡기고 약정한 기간 동안 확정된 이율로 이자를 받는 상품이다."
    b = a.replace("확정된 이율로", "변동 이율로")
    similarity = jaccard(shingle_hashes(a), shingle_hashes(b))
    assert 0.5 < similarity < 0.95
    assert near_duplicates([a, b], threshold=similarity - 0.05) == [(1, 0)]
    assert near_duplicates([a, b], threshold=min(similarity + 0.05, 1.0)) == []


def test_lsh_band_choice_catches_pairs_at_the_threshold():
    bands, rows = lsh_bands(128, 0.85)
    assert bands * rows == 128
    # Probability that a pair exactly at the threshold becomes a candidate.
    assert 1 - (1 - 0.85**rows) ** bands > 0.99


def test_signatures_are_stable_across_processes():
    text = "예금자보호법에 따라 1인당 1억원까지 보호된다."
    here = minhash_signatures([shingle_hashes(text)], 64, seed=3)[0].tolist()
    code = (
        "from kofin.data_ko.dedupe import minhash_signatures, shingle_hashes;"
        f"print(minhash_signatures([shingle_hashes({text!r})], 64, seed=3)[0].tolist())"
    )
    # Different hash seeds: Python's salted hash() must play no part.
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONHASHSEED": seed},
            check=True,
        )
        assert out.stdout.strip() == str(here)


def test_signature_agrees_with_shingle_minimum():
    sh = [shingle_hashes("가나다라마바사아자차카타파하"), shingle_hashes("")]
    sig = minhash_signatures(sh, 16, seed=0)
    assert sig.shape == (2, 16) and sig.dtype == np.uint64
    assert (sig[1] == 0xFFFFFFFF).all()  # empty text: no shingle lowers the signature
    assert sh[0].size == 10


def test_cross_duplicates_report_query_and_corpus_rows():
    corpus = distinct_texts(30)
    queries = ["완전히 새로운 질문과 답입니다. " * 10, corpus[7] + " 끝.", corpus[20]]
    assert cross_duplicates(queries, corpus, 0.85) == [(1, 7), (2, 20)]


def test_ten_thousand_rows_take_seconds():
    texts = distinct_texts(200)
    rows = [f"{t} (사본 {i})" for i in range(50) for t in texts]  # 10,000 rows, 200 near-identical groups
    start = time.perf_counter()
    found = near_duplicates(rows, 0.85)
    elapsed = time.perf_counter() - start
    assert len(found) == 10_000 - 200
    assert elapsed < 30, f"near-duplicate detection of 10k rows took {elapsed:.1f} s"
