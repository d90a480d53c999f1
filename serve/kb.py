"""A knowledge-base folder: chunks, sources and indexes, written atomically, verified on load.

Run as: a library; `kofin ingest` writes a KB (through `kofin.rundir.open_run`, so it is built in
`KB.partial/` and renamed into place with `manifest.json` and `COMPLETE` last: an interrupted
ingest leaves the previous KB as it was). `load_kb` refuses a folder without `COMPLETE`, and
checks the sha256 of every file against the manifest before parsing any of it, so a corrupted or
tampered index is named instead of silently answering wrong. Nothing here unpickles.

    KB/
      chunks.jsonl        one chunk per line: id, document id, title, section, page, groups, text
      sources.json        ingested files: sha256, size, root, document ids (incremental ingest)
      kb.json             format version, index settings, dense encoder
      bm25.npz bm25_vocab.json bm25_idf.npy       Kiwi-morpheme BM25
      chars.npz chars_vocab.json chars_idf.npy    char n-gram TF-IDF
      dense.faiss [svd_components.npy]            dense vectors (FAISS), LSA projection
      config.yaml manifest.json COMPLETE          written by kofin.rundir
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kofin.data_ko.korean import morpheme_terms
from kofin.errors import KofinError
from kofin.rundir import MANIFEST, require_complete, sha256_file
from kofin.serve.index import DenseInfo, IndexConfig, char_vectorizer, load_csc, load_json

FORMAT_VERSION = 1
STAGE = "ingest"


# A word of a document, as the scope checks read it: letters and digits, Hangul or Latin.
WORD = re.compile(r"[0-9A-Za-z가-힣]+")


class KnowledgeBaseError(KofinError):
    """A knowledge-base folder that cannot be used; the message says which file and what to do."""


def verified_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a complete KB whose every file still has its recorded sha256."""
    path = Path(path)
    try:
        manifest = require_complete(path, STAGE, what="knowledge base")
    except KofinError as err:
        raise KnowledgeBaseError(f"{err} (build one with `kofin ingest --kb {path} PATHS...`)") from None
    outputs = manifest.get("outputs", {})
    if "chunks.jsonl" not in outputs:
        raise KnowledgeBaseError(
            f"knowledge base {path}: {MANIFEST} lists no chunks.jsonl; "
            f"re-run `kofin ingest --kb {path} --rebuild PATHS...`"
        )
    for name, info in outputs.items():
        file = path / name
        if not file.is_file():
            raise KnowledgeBaseError(
                f"knowledge base {path}: {name} is missing; re-run `kofin ingest --kb {path} --rebuild PATHS...`"
            )
        if sha256_file(file) != info["sha256"]:
            raise KnowledgeBaseError(
                f"knowledge base {path}: {name} does not match its sha256 in {MANIFEST} (corrupted or changed "
                f"after ingest); nothing was loaded. Re-run `kofin ingest --kb {path} --rebuild PATHS...`"
            )
    return manifest


def read_chunks(path: Path) -> list[dict]:
    with open(Path(path) / "chunks.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_sources(path: Path) -> dict[str, dict]:
    return load_json(Path(path) / "sources.json")


@dataclass
class KnowledgeBase:
    path: Path
    chunks: list[dict]
    sources: dict[str, dict]
    bm25: Any  # scipy CSC (chunks x terms), BM25 weight per cell
    bm25_vocab: dict[str, int]
    bm25_idf: np.ndarray
    chars: Any  # scipy CSC (chunks x char n-grams), TF-IDF
    char_vectorizer: Any
    dense: Any  # faiss.Index over normalised vectors
    dense_info: DenseInfo
    index_cfg: IndexConfig
    svd_components: np.ndarray | None
    group_masks: dict[str, np.ndarray] = field(default_factory=dict)
    _encoder: Any = None
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def derived(self, what: str, build: Callable[[], Any]) -> Any:
        """`build()`'s value for this KB, made once: the indexes the answer rules read from it (the
        statutes it holds, its words' pieces, its topic names). A re-ingested KB is a new object."""
        if what not in self._derived:
            self._derived[what] = build()
        return self._derived[what]

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def n_docs(self) -> int:
        return len(self._doc_rows)

    def doc_rows(self, doc_id: str) -> list[int]:
        """The rows of one document's chunks, in order."""
        return self._doc_rows.get(doc_id, [])

    @cached_property
    def _doc_rows(self) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {}
        for i, c in enumerate(self.chunks):
            rows.setdefault(c["doc_id"], []).append(i)
        return rows

    @cached_property
    def title_terms(self) -> Counter[str]:
        """How many documents' titles carry each morpheme (a word few titles share names a topic)."""
        titles: dict[str, str] = {}
        for chunk in self.chunks:
            titles.setdefault(chunk["doc_id"], chunk["title"])
        counts: Counter[str] = Counter()
        for title in titles.values():
            counts.update(set(morpheme_terms(title)))
        return counts

    @cached_property
    def words(self) -> frozenset[str]:
        """Every word (lower-cased) the documents use, in titles, headings and text."""
        text = (f"{c['title']} {c['section']} {c['text']}" for c in self.chunks)
        return frozenset(w.lower() for t in text for w in WORD.findall(t))

    def allowed(self, groups: tuple[str, ...] | list[str]) -> np.ndarray:
        """Boolean mask of the chunks a user in `groups` may read (documents open to `all` included)."""
        mask = np.zeros(len(self.chunks), dtype=bool)
        for g in set(groups) | {"all"}:
            if g in self.group_masks:
                mask |= self.group_masks[g]
        return mask

    def char_query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The question's char n-gram TF-IDF vector as (columns, values): what the vectorizer's
        `transform` gives (sublinear tf, idf, l2 norm), without its per-call validation, which
        took 3 ms of a 10 ms answer."""
        counts: dict[int, int] = {}
        vocab = self.char_vectorizer.vocabulary_
        for gram in self._char_analyzer(text):
            j = vocab.get(gram)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        values = (1.0 + np.log(tf)) * self.char_vectorizer.idf_[cols]
        return cols, (values / np.linalg.norm(values)).astype(np.float32)

    @cached_property
    def _char_analyzer(self):
        return self.char_vectorizer.build_analyzer()

    def encode_query(self, text: str, terms: dict[str, float]) -> np.ndarray:
        """The question as a dense vector: the model's embedding, or its LSA projection."""
        if self.dense_info.kind == "sentence-transformers":
            if self._encoder is None:
                from kofin.serve.index import SentenceTransformerEncoder

                self._encoder = SentenceTransformerEncoder(str(self.dense_info.model))
            return self._encoder.encode([text])
        components = self.svd_components
        assert components is not None, "load_kb reads svd_components.npy for every morpheme-lsa KB"
        vec = np.zeros((1, self.dense_info.dim), dtype=np.float32)
        for term, weight in terms.items():
            j = self.bm25_vocab.get(term)
            if j is not None:
                vec[0] += (weight * self.bm25_idf[j]) * components[:, j]
        return vec / max(float(np.linalg.norm(vec)), 1e-9)


def load_kb(path: Path) -> KnowledgeBase:
    import faiss

    path = Path(path).resolve()
    verified_manifest(path)  # every file checked before any is parsed
    info = load_json(path / "kb.json")
    if info.get("format") != FORMAT_VERSION:
        raise KnowledgeBaseError(
            f"knowledge base {path}: format {info.get('format')} is not {FORMAT_VERSION}; "
            f"re-run `kofin ingest --kb {path} --rebuild PATHS...`"
        )
    chunks = read_chunks(path)
    dense_info = DenseInfo.model_validate(info["dense"])
    svd = np.load(path / "svd_components.npy", allow_pickle=False) if dense_info.kind == "morpheme-lsa" else None
    masks: dict[str, np.ndarray] = {}
    for i, c in enumerate(chunks):
        for g in c["groups"]:
            masks.setdefault(g, np.zeros(len(chunks), dtype=bool))[i] = True
    return KnowledgeBase(
        path=path,
        chunks=chunks,
        sources=read_sources(path),
        bm25=load_csc(path / "bm25.npz"),
        bm25_vocab=load_json(path / "bm25_vocab.json"),
        bm25_idf=np.load(path / "bm25_idf.npy", allow_pickle=False),
        chars=load_csc(path / "chars.npz"),
        char_vectorizer=char_vectorizer(
            load_json(path / "chars_vocab.json"), np.load(path / "chars_idf.npy", allow_pickle=False)
        ),
        dense=faiss.read_index(str(path / "dense.faiss")),
        dense_info=dense_info,
        index_cfg=IndexConfig.model_validate(info["index"]),
        svd_components=svd,
        group_masks=masks,
    )
