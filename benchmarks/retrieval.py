"""Retrieval benchmark on ../shared/data/laws: ingest time, Recall@5, MRR@10, p95 latency.

Run as:
    .venv/bin/python benchmarks/retrieval.py                       # laws corpus, offline default
    .venv/bin/python benchmarks/retrieval.py --scale 300000        # + latency at 300k chunks

Two question sets: the 60 dev questions in ../shared/data/laws, and benchmarks/questions_heldout.jsonl
(80 questions about other articles, written the same way by someone who had not seen the
retrieval code, to check that a change helps questions it was not developed on).

Article-level: a question counts as found at rank r when a chunk of its gold article is the
r-th distinct document in the ranking. The 300k scale-up replicates the laws chunks with shuffled
morphemes and jittered vectors (synthetic text, real index structures and the real search code).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kofin.offline import apply_offline_env

ROOT = Path(__file__).resolve().parents[1]
LAWS = ROOT.parent / "shared" / "data" / "laws"
HELDOUT = Path(__file__).resolve().parent / "questions_heldout.jsonl"


def evaluate(retriever, questions: list[dict], depth: int = 10) -> dict:
    recall5 = mrr = 0.0
    latencies = []
    for q in questions:
        t = time.perf_counter()
        hits = retriever.search(q["question"], ("all",), k=depth * 4)
        latencies.append(time.perf_counter() - t)
        docs: list[str] = []
        for h in hits:
            if h.chunk["doc_id"] not in docs:
                docs.append(h.chunk["doc_id"])
        docs = docs[:depth]
        gold = set(q["gold"])
        recall5 += any(d in gold for d in docs[:5])
        rank = next((i for i, d in enumerate(docs, 1) if d in gold), None)
        mrr += 1 / rank if rank else 0.0
    n = len(questions)
    return {
        "questions": n,
        "recall@5": round(recall5 / n, 4),
        "mrr@10": round(mrr / n, 4),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 2),
    }


def scaled_kb(kb, n: int, seed: int = 0):
    """`kb` grown to `n` chunks: copies of its chunks with jittered BM25 / char weights and dense
    vectors, as different documents (`<id>~copyK`). Real index types, real search code."""
    import dataclasses

    import faiss
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    reps = -(-n // len(kb))

    def grow(matrix):
        parts = [matrix.tocsr()]
        for _ in range(reps - 1):
            m = matrix.tocsr().copy()
            m.data = m.data * rng.uniform(0.6, 1.4, size=m.data.shape).astype(np.float32)
            parts.append(m)
        return sp.vstack(parts, format="csr")[:n].tocsc()

    vectors = kb.dense.reconstruct_n(0, kb.dense.ntotal)
    big_vectors = np.vstack(
        [vectors] + [vectors + rng.normal(0, 0.05, vectors.shape).astype(np.float32) for _ in range(reps - 1)]
    )[:n]
    big_vectors /= np.linalg.norm(big_vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(big_vectors.shape[1])
    index.add(np.ascontiguousarray(big_vectors, dtype=np.float32))
    chunks = list(kb.chunks)
    for k in range(1, reps):
        chunks += [dict(c, doc_id=f"{c['doc_id']}~copy{k}", chunk_id=f"{c['chunk_id']}~copy{k}") for c in kb.chunks]
    chunks = chunks[:n]
    masks = {"all": np.ones(n, dtype=bool)}
    return dataclasses.replace(
        kb, chunks=chunks, bm25=grow(kb.bm25), chars=grow(kb.chars), dense=index, group_masks=masks
    )


def main() -> int:
    apply_offline_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--laws", type=Path, default=LAWS, help="folder with fin_articles.jsonl and questions_dev.jsonl"
    )
    parser.add_argument("--heldout", type=Path, default=HELDOUT, help="second question set (qid, question, gold)")
    parser.add_argument("--kb", type=Path, help="KB folder to (re)build; default: a temp folder")
    parser.add_argument("--scale", type=int, default=0, help="also measure latency at this many chunks (synthetic)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()

    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest
    from kofin.serve.kb import load_kb
    from kofin.serve.retrieve import HybridRetriever

    tmp = Path(tempfile.mkdtemp(prefix="kofin-bench-"))
    kb_dir = args.kb or tmp / "kb-laws"
    questions = [json.loads(line) for line in open(args.laws / "questions_dev.jsonl", encoding="utf-8")]
    heldout = [json.loads(line) for line in open(args.heldout, encoding="utf-8")] if args.heldout.exists() else []
    try:
        t = time.perf_counter()
        report = ingest(
            IngestConfig(
                output_dir=kb_dir, inputs=[args.laws / "fin_articles.jsonl"], rebuild=True, default_groups=["all"]
            )
        )
        ingest_s = time.perf_counter() - t
        kb = load_kb(kb_dir)
        retriever = HybridRetriever(kb)
        retriever.search("워밍업 질문", ("all",))  # Kiwi model load is not a query's latency
        results = {"ingest_s": round(ingest_s, 2), "chunks": report.chunks, "documents": report.documents}
        results["laws"] = evaluate(retriever, questions)
        if heldout:
            results["heldout"] = evaluate(retriever, heldout)
        print(json.dumps(results, ensure_ascii=False), flush=True)
        if args.scale:
            big = scaled_kb(kb, args.scale)
            results[f"scale_{args.scale}"] = evaluate(HybridRetriever(big), questions)
            print(json.dumps(results, ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
