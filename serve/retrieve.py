"""Hybrid retrieval with access control: Kiwi BM25 + char n-grams + dense (FAISS), fused by RRF.

Run as: a library; `kofin ask` and the chat call `HybridRetriever.search`, and any langchain
chain can use `KofinRetriever` (a langchain `BaseRetriever`).

Access control comes first: the chunks a user may not read are masked out of every index before
anything is ranked (BM25 and char scores are set to -inf, FAISS searches with an ID selector), so
a restricted chunk can never take a rank, appear in a score, or be cited.

Fusion blends two views of the same three lists. Weighted reciprocal-rank fusion (Cormack et
al. 2009; each list contributes weight / (rrf_k + rank)) compares ranks, which are comparable
across BM25, TF-IDF and cosine, and keeps recall robust; but it forgets *how far* a list's first
hit is ahead of its second. Z-score fusion keeps that: each list's scores are standardised over
its own candidates, and a chunk far above its list's mean gets credit in proportion. The final
score is (1 - score_weight) * RRF + score_weight * z, each scaled to its best value. Measured on
the laws questions and on 80 held-out questions written blind (benchmarks/README.md), the blend
raised MRR@10 on both sets over either fusion alone without losing Recall@5.

The question is first expanded with the lexicon (statute short names -> full names, everyday
words -> the statutes' terms); expansion terms count at `expansion_weight` in BM25 so they help
recall without outvoting the question. Interrogatives and question frames (누구, 몇, 알려 주세요)
are dropped from the question's terms: they say what kind of answer is wanted, not what about.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from kofin.config import KofinModel, ResolvedPath
from kofin.data_ko.korean import QUESTION_WORDS, morpheme_terms
from kofin.serve.index import with_bigrams
from kofin.serve.kb import KnowledgeBase
from kofin.serve.lexicon import Lexicon
from kofin.serve.shortnames import expansion as shortened_name_terms

Ranked = tuple[list[int], list[float]]  # chunk rows best first, and their scores in that list


class RetrievalConfig(KofinModel):
    top_k: int = Field(
        5,
        ge=1,
        le=50,
        description="Sources returned per question (plus, when none holds the kind of value asked for, "
        "the best document's chunk that does).",
    )
    candidates: int = Field(
        100, ge=10, le=2000, description="How deep each list (BM25, chars, dense) is read before fusion."
    )
    rrf_k: int = Field(60, ge=1, description="RRF constant: larger flattens the difference between ranks.")
    score_weight: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of the fused score from z-score fusion (how far each chunk is above its list's mean); "
        "the rest is RRF. 0: RRF alone.",
    )
    bm25_weight: float = Field(1.0, ge=0, description="RRF weight of the Kiwi-morpheme BM25 list.")
    chars_weight: float = Field(0.5, ge=0, description="RRF weight of the char n-gram TF-IDF list.")
    dense_weight: float = Field(0.5, ge=0, description="RRF weight of the dense (FAISS) list.")
    expansion_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="BM25 weight of lexicon expansions (full statute names, synonyms) "
        "relative to the question's own terms.",
    )
    reranker_model: ResolvedPath | None = Field(
        None,
        description="Local cross-encoder folder (sentence-transformers CrossEncoder) "
        "to rerank the fused top candidates; None: no reranking.",
    )
    rerank_top: int = Field(20, ge=1, le=200, description="How many fused candidates the reranker rescores.")
    extra_aliases: dict[str, str] = Field(
        default_factory=dict, description="More statute short names: {short: full name}."
    )
    extra_synonyms: dict[str, list[str]] = Field(
        default_factory=dict, description="More synonyms: {word people say: [words documents use]}."
    )


@dataclass
class Hit:
    index: int  # row in kb.chunks
    score: float  # fused score (or reranker score)
    chunk: dict


class HybridRetriever:
    def __init__(self, kb: KnowledgeBase, cfg: RetrievalConfig | None = None):
        self.kb = kb
        self.cfg = cfg or RetrievalConfig()
        self.lexicon = Lexicon(self.cfg.extra_aliases, self.cfg.extra_synonyms)
        self._reranker: Any = None

    # -------------------------------------------------------------- the three lists

    def _bm25(self, terms: dict[str, float], allowed: np.ndarray | None) -> Ranked:
        m = self.kb.bm25
        scores = np.zeros(m.shape[0], dtype=np.float32)
        for term, weight in terms.items():
            j = self.kb.bm25_vocab.get(term)
            if j is None:
                continue
            lo, hi = m.indptr[j], m.indptr[j + 1]
            scores[m.indices[lo:hi]] += m.data[lo:hi] * weight  # one posting per (chunk, term): no repeats
        return _top(scores, allowed, self.cfg.candidates)

    def _chars(self, text: str, allowed: np.ndarray | None) -> Ranked:
        cols, values = self.kb.char_query(text)
        if not len(cols):
            return [], []
        scores = np.asarray(self.kb.chars[:, cols] @ values, dtype=np.float32).ravel()
        return _top(scores, allowed, self.cfg.candidates)

    def _dense(self, text: str, terms: dict[str, float], allowed: np.ndarray | None) -> Ranked:
        import faiss

        n = self.kb.dense.ntotal
        if n == 0:
            return [], []
        params = None
        if allowed is not None:
            # Access control inside the search: FAISS never scores a chunk outside the bitmap.
            bitmap = np.packbits(allowed, bitorder="little")
            params = faiss.SearchParameters()  # faiss's stub types no keyword init; the same setattr as sel=
            params.sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
        k = min(self.cfg.candidates, n)
        # One query is too little work to split: FAISS's OpenMP threads only contend with each
        # other and with the chat's other sessions (300k chunks on 2 busy cores: 75 ms with 2
        # threads, 18 ms with 1).
        faiss.omp_set_num_threads(1)
        scores, ids = self.kb.dense.search(self.kb.encode_query(text, terms), k, params=params)
        keep = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and s > 0]
        return [i for i, _ in keep], [s for _, s in keep]

    # -------------------------------------------------------------- search

    def query_terms(self, question: str) -> dict[str, float]:
        """BM25 terms of a question with their weights: its own morphemes 1, lexicon expansions less."""
        terms: dict[str, float] = {}
        expansion = self.lexicon.expand(question).text()
        for term in morpheme_terms(expansion) if expansion else []:
            terms[term] = self.cfg.expansion_weight
        own = [t for t in morpheme_terms(question) if t not in QUESTION_WORDS]
        for name in own:
            # "금감원", "주담대": a word no document uses may shorten one that some do
            for term in shortened_name_terms(self.kb, name):
                terms.setdefault(term, self.cfg.expansion_weight)
        for term in with_bigrams(own) if self.kb.index_cfg.bigrams else own:
            terms[term] = 1.0
        return terms

    def alternatives(self, term: str) -> list[tuple[str, ...]]:
        """What else the KB may write a question's term as, each as its morphemes: the lexicon's
        synonyms for it (깎 -> 감면) and the name it shortens (주담대 -> 주택 담보 대출). The answer
        gate counts the term as found where one of these is, as retrieval searched for them."""
        memo: dict[str, list[tuple[str, ...]]] = self.kb.derived("term alternatives", dict)
        if term not in memo:
            alts = [tuple(morpheme_terms(w)) for w in self.lexicon.synonyms.get(term, ())]
            memo[term] = [a for a in [*alts, shortened_name_terms(self.kb, term)] if a]
        return memo[term]

    def search(self, question: str, groups: tuple[str, ...] | list[str] = ("all",), k: int | None = None) -> list[Hit]:
        k = k or self.cfg.top_k
        allowed = self.kb.allowed(groups)
        if not allowed.any():
            return []
        mask = None if allowed.all() else allowed
        terms = self.query_terms(question)
        lists = [
            (self.cfg.bm25_weight, self._bm25(terms, mask)),
            (self.cfg.chars_weight, self._chars(question, mask)),
            (self.cfg.dense_weight, self._dense(question, terms, mask)),
        ]
        fused = self._fuse(lists)
        order = sorted(fused, key=lambda i: -fused[i])
        # Defence in depth: the lists were masked already; a leak here would be a bug upstream.
        order = [i for i in order if allowed[i]]
        depth = max(k, self.cfg.rerank_top) if self.cfg.reranker_model is not None else k
        hits = [Hit(i, fused[i], self.kb.chunks[i]) for i in order[:depth]]  # what can be returned, not all ~300
        if self.cfg.reranker_model is not None and hits:
            hits = self._rerank(question, hits[: self.cfg.rerank_top]) + hits[self.cfg.rerank_top :]
        return hits[:k]

    def _fuse(self, lists: list[tuple[float, Ranked]]) -> dict[int, float]:
        """(1 - score_weight) * RRF + score_weight * z-score fusion, each scaled to its maximum."""
        rrf: dict[int, float] = {}
        z: dict[int, float] = {}
        for weight, (ranked, scores) in lists:
            if weight <= 0 or not ranked:
                continue
            values = np.asarray(scores, dtype=np.float64)
            spread = float(values.std()) or 1.0
            above = (weight * (values - values.mean()) / spread).tolist()
            for rank, i in enumerate(ranked):
                rrf[i] = rrf.get(i, 0.0) + weight / (self.cfg.rrf_k + rank + 1)
                if above[rank] > 0:  # only chunks above their list's mean earn score credit
                    z[i] = z.get(i, 0.0) + above[rank]
        share = self.cfg.score_weight
        top_rrf = max(rrf.values(), default=1.0)
        top_z = max(z.values(), default=0.0) or 1.0
        return {i: (1 - share) * r / top_rrf + share * z.get(i, 0.0) / top_z for i, r in rrf.items()}

    def _rerank(self, question: str, hits: list[Hit]) -> list[Hit]:
        if self._reranker is None:
            try:
                from sentence_transformers import CrossEncoder
            except ImportError:
                from kofin.errors import KofinError

                raise KofinError("retrieval.reranker_model is set but sentence-transformers is not installed") from None
            self._reranker = CrossEncoder(str(self.cfg.reranker_model), device="cpu", local_files_only=True)
        scores = self._reranker.predict([(question, h.chunk["text"]) for h in hits])
        ranked = sorted(zip(scores, hits, strict=True), key=lambda p: -float(p[0]))
        return [Hit(h.index, float(s), h.chunk) for s, h in ranked]


def _top(scores: np.ndarray, allowed: np.ndarray | None, n: int) -> Ranked:
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    n = min(n, int((scores > 0).sum()))
    if n <= 0:
        return [], []
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [int(i) for i in idx], [float(scores[i]) for i in idx]


# ---------------------------------------------------------------- langchain


def chunk_document(hit: Hit):
    """A hit as a langchain Document: chunk text plus its citation metadata."""
    from langchain_core.documents import Document

    c = hit.chunk
    meta = {
        "id": c["doc_id"],
        "chunk_id": c["chunk_id"],
        "title": c["title"],
        "section": c["section"],
        "page": c["page"],
        "groups": list(c["groups"]),
        "score": round(hit.score, 6),
    }
    return Document(page_content=c["text"], metadata=meta, id=c["chunk_id"])


@lru_cache(maxsize=1)
def _langchain_retriever():
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.retrievers import BaseRetriever

    class KofinRetriever(BaseRetriever):
        """kofin's hybrid retriever for langchain chains; `groups` is the caller's access groups."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        retriever: HybridRetriever
        groups: tuple[str, ...] = ("all",)
        k: int = 5

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list:
            return [chunk_document(h) for h in self.retriever.search(query, self.groups, self.k)]

    return KofinRetriever


def __getattr__(name: str):
    # langchain-core is imported only when a caller asks for the langchain retriever.
    if name == "KofinRetriever":
        return _langchain_retriever()
    raise AttributeError(name)


def load_retriever(kb_path: Path, cfg: RetrievalConfig | None = None) -> HybridRetriever:
    from kofin.serve.kb import load_kb

    return HybridRetriever(load_kb(kb_path), cfg)
