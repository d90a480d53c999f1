"""A reranker and an answerability model learned from the statutes' own text: tried, not kept.

Run as:
    .venv/bin/python benchmarks/learned_rerank.py [--work DIR] [--out benchmarks/results/learned-rerank.json]

Issue 16 suggested a small reranker trained on CPU from synthetic pairs the corpus gives, and an
abstention model trained the same way. This script is that experiment, kept so that its result
can be reproduced; neither model is in `kofin.serve`, because neither helped on questions it was
not trained on (benchmarks/README.md, "answers").

- Candidates: the hybrid retriever's fused top `DEPTH` chunks (kofin ask's defaults).
- Features of (question, candidate), `RANK_FEATURES`: its place and score in each of the three
  lists and in the fusion, idf-weighted coverage of the question by its text and by its title,
  how much of its title the question (or its lexicon expansion) names, matched-term count.
- Reranker: pairwise logistic regression (RankNet with a linear scorer): the gold document's best
  chunk against every other document's chunk of the same question.
- Synthetic questions (`synthetic_questions`): from 800 seeded chunks, a few of one sentence's
  words (`words`: a window of its eojeols with some dropped; `morphemes`: a sample of its content
  morphemes), sometimes the law's name, sometimes words of an unrelated chunk, a question frame.
- Answerability: the same synthetic question searched with its article present (answerable) and
  with the article, or its whole law, masked out (unanswerable); a logistic regression on
  `ANSWER_FEATURES` of the reranked top. Compared with the served gate's measure (`evidence`) by
  ROC AUC on the labelled answerable/unanswerable sets.
- For comparison, the same reranker trained on the labelled dev questions (questions_dev.jsonl,
  questions_heldout.jsonl, dev/laws_styles.jsonl) and measured on benchmarks/heldout/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kofin.offline import apply_offline_env

HERE = Path(__file__).resolve().parent
LAWS = HERE.parent.parent / "shared" / "data" / "laws"
ANSWERABLE = {
    "dev60": LAWS / "questions_dev.jsonl",
    "dev80": HERE / "questions_heldout.jsonl",
    "styles-dev": HERE / "dev" / "laws_styles.jsonl",
    "heldout": HERE / "heldout" / "laws_answerable.jsonl",
}
UNANSWERABLE = {
    "styles-dev": HERE / "dev" / "laws_unanswerable.jsonl",
    "heldout": HERE / "heldout" / "laws_unanswerable.jsonl",
}
DEV_TRAIN = ("dev60", "dev80", "styles-dev")
DEPTH = 30  # fused candidates read: the gold article is among them for 0.93 of the held-out questions
QUESTIONS = 800
_FRAMES = ("", "?", " 어떻게 되나요?", " 알려 주세요", " 궁금합니다", "인가요?", " 되나요?")
RANK_FEATURES = (
    "fused", "fused_rank", "bm25", "bm25_rank", "chars", "chars_rank", "dense", "dense_rank",
    "coverage", "title_coverage", "title_named", "expansion_title", "matched", "doc_chunks",
)  # fmt: skip
ANSWER_FEATURES = ("top_score", "gap", "top_coverage", "top_title_coverage", "best_coverage", "top_bm25", "top_dense")


@dataclass
class Candidates:
    terms: dict[str, float]
    lists: list[tuple[list[int], list[float]]]  # BM25, chars, dense
    scores: dict[int, float]  # fused
    order: list[int]
    features: dict[int, np.ndarray] = field(default_factory=dict)
    learned: dict[int, float] = field(default_factory=dict)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def candidates(r, question: str, mask: np.ndarray | None = None) -> Candidates:
    """What `HybridRetriever.search` computes before it cuts to top_k (same lists, same fusion)."""
    terms = r.query_terms(question)
    lists = [r._bm25(terms, mask), r._chars(question, mask), r._dense(question, terms, mask)]
    fused = r._fuse(list(zip((r.cfg.bm25_weight, r.cfg.chars_weight, r.cfg.dense_weight), lists, strict=True)))
    return Candidates(terms, lists, fused, sorted(fused, key=lambda i: -fused[i]))


class Featurizer:
    def __init__(self, retriever):
        from kofin.data_ko.korean import morpheme_terms

        self.r = retriever
        self.rows = retriever.kb.bm25.tocsr()
        chunks = retriever.kb.chunks
        self.titles = [frozenset(morpheme_terms(f"{c['title']} {c['section']}")) for c in chunks]

    def rank(self, found: Candidates, rows: list[int]) -> np.ndarray:
        kb = self.r.kb
        vocab, idf = kb.bm25_vocab, kb.bm25_idf
        max_idf = float(idf.max())
        own = [t for t, w in found.terms.items() if w >= 1.0]
        own_ids = np.asarray([vocab.get(t, -1) for t in own], dtype=np.int64)
        own_idf = np.asarray([float(idf[j]) if j >= 0 else max_idf for j in own_ids])
        own_total = float(own_idf.sum()) or 1.0
        exp_idf = {t: float(idf[vocab[t]]) for t, w in found.terms.items() if w < 1.0 and t in vocab}
        places = []
        for ranked, scores in found.lists:
            top = max(scores, default=1.0) or 1.0
            places.append({i: (k, s / top) for k, (i, s) in enumerate(zip(ranked, scores, strict=True))})
        dense = dict(zip(*found.lists[2], strict=True))
        best = found.scores[found.order[0]] if found.order else 1.0
        fused_place = {i: k for k, i in enumerate(found.order)}
        docs = [kb.chunks[i]["doc_id"] for i in rows]
        out = np.zeros((len(rows), len(RANK_FEATURES)))
        for n, i in enumerate(rows):
            cols = self.rows.indices[self.rows.indptr[i] : self.rows.indptr[i + 1]]
            present = np.isin(own_ids, cols) & (own_ids >= 0)
            title = self.titles[i]
            in_title = np.asarray([t in title for t in own], dtype=bool)
            title_total = sum(float(idf[vocab[t]]) for t in title if t in vocab) or 1.0
            named = sum(float(idf[vocab[t]]) for t in title if t in vocab and t in found.terms)
            bm, ch, de = (p.get(i) for p in places)
            out[n] = (
                found.scores.get(i, 0.0) / (best or 1.0),
                1 / (1 + fused_place.get(i, len(fused_place))),
                bm[1] if bm else 0.0,
                1 / (1 + bm[0]) if bm else 0.0,
                ch[1] if ch else 0.0,
                1 / (1 + ch[0]) if ch else 0.0,
                dense.get(i, 0.0),
                1 / (1 + de[0]) if de else 0.0,
                float(own_idf[present].sum()) / own_total,
                float(own_idf[in_title].sum()) / own_total,
                named / title_total,
                sum(v for t, v in exp_idf.items() if t in title) / (sum(exp_idf.values()) or 1.0),
                math.log1p(int(present.sum())),
                docs.count(docs[n]) - 1,
            )
        return out

    def rerank(self, found: Candidates, weights: np.ndarray, scale: np.ndarray, allowed=None) -> list[int]:
        order = [i for i in found.order if allowed is None or allowed[i]]
        head = order[:DEPTH]
        x = self.rank(found, head)
        s = (x / scale) @ weights
        found.features = dict(zip(head, x, strict=True))
        found.learned = dict(zip(head, s.tolist(), strict=True))
        return [head[j] for j in np.argsort(-s, kind="stable")] + order[DEPTH:]

    def answer(self, found: Candidates, ranked: list[int]) -> np.ndarray:
        col = {name: n for n, name in enumerate(RANK_FEATURES)}
        chunks = self.r.kb.chunks
        top = ranked[0]
        second = next((i for i in ranked[1:DEPTH] if chunks[i]["doc_id"] != chunks[top]["doc_id"]), None)
        head = [i for i in ranked[:3] if i in found.features]
        x = found.features[top]
        return np.asarray(
            [
                found.learned[top],
                found.learned[top] - found.learned[second] if second is not None else 1.0,
                x[col["coverage"]],
                x[col["title_coverage"]],
                max(found.features[i][col["coverage"]] for i in head),
                math.log1p(dict(zip(*found.lists[0], strict=True)).get(top, 0.0)),
                x[col["dense"]],
            ]
        )


def _name(chunk: dict) -> str:
    return str((chunk.get("metadata") or {}).get("law") or chunk["title"])


def synthetic_questions(chunks: list[dict], mode: str, n: int = QUESTIONS, seed: int = 0) -> list[tuple[str, int]]:
    """(question, row it was made from), seeded: the same KB gives the same questions."""
    from kofin.data_ko.korean import morpheme_terms, split_sentences

    rng = np.random.default_rng(seed)
    rows = [i for i, c in enumerate(chunks) if len(c["text"].split()) >= 4]
    rows = sorted(rng.choice(rows, size=min(n, len(rows)), replace=False).tolist())
    out = []
    for row in rows:
        sentences = [s.split() for s in split_sentences(chunks[row]["text"])]
        sentences = [s for s in sentences if len(s) >= 4] or [chunks[row]["text"].split()]
        words = sentences[int(rng.integers(len(sentences)))]
        if mode == "morphemes":
            words = list(dict.fromkeys(morpheme_terms(" ".join(words)))) or words
            size = min(int(rng.integers(2, 6)), len(words))
            picked = [words[j] for j in sorted(rng.choice(len(words), size=size, replace=False))]
        else:
            size = int(rng.integers(2, 8))
            start = int(rng.integers(max(len(words) - size, 0) + 1))
            picked = [w for w in words[start : start + size] if rng.random() > 0.25] or words[start : start + 2]
        if rng.random() < 0.3:
            rng.shuffle(picked)
        if rng.random() < 0.4:
            picked = _name(chunks[row]).split() + picked
        if rng.random() < 0.3:
            other = chunks[int(rng.integers(len(chunks)))]["text"].split()
            k = min(int(rng.integers(1, 4)), len(other))
            picked = [other[j] for j in rng.choice(len(other), size=k, replace=False)] + picked
        out.append((" ".join(picked) + _FRAMES[int(rng.integers(len(_FRAMES)))], row))
    return out


def _logistic(x: np.ndarray, y: np.ndarray, intercept: bool):
    from sklearn.linear_model import LogisticRegression

    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000, fit_intercept=intercept).fit(x / scale, y)
    return model, scale


def fit_ranker(feat: Featurizer, labelled: list[tuple[Candidates, set[str]]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise logistic regression: (gold document's best chunk - another document's chunk) -> 1."""
    chunks = feat.r.kb.chunks
    pairs = []
    for found, gold in labelled:
        head = found.order[:DEPTH]
        is_gold = np.asarray([chunks[i]["doc_id"] in gold for i in head])
        if is_gold.any() and not is_gold.all():
            x = feat.rank(found, head)
            pairs.append(x[int(np.argmax(is_gold))] - x[~is_gold])
    d = np.concatenate(pairs)
    model, scale = _logistic(np.concatenate([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))], intercept=False)
    return model.coef_[0], scale


def ranks(feat: Featurizer, labelled: list[tuple[Candidates, set[str]]], model) -> dict:
    chunks = feat.r.kb.chunks
    r5 = rr = 0.0
    for found, gold in labelled:
        order = found.order if model is None else feat.rerank(found, *model)
        docs: list[str] = []
        for i in order:
            if chunks[i]["doc_id"] not in docs:
                docs.append(chunks[i]["doc_id"])
            if len(docs) == 10:
                break
        rank = next((k for k, d in enumerate(docs, 1) if d in gold), None)
        r5 += bool(rank and rank <= 5)
        rr += 1 / rank if rank else 0.0
    return {"recall@5": round(r5 / len(labelled), 3), "mrr@10": round(rr / len(labelled), 3)}


def main() -> int:
    apply_offline_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="folder for the statute KB (kept); default: a temp folder")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    from kofin.serve.answer import evidence
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest
    from kofin.serve.retrieve import Hit, load_retriever

    tmp = Path(tempfile.mkdtemp(prefix="kofin-rerank-"))
    kb_dir = (args.work or tmp) / "kb-laws"
    results: dict = {}
    try:
        ingest(IngestConfig(output_dir=kb_dir, inputs=[LAWS / "fin_articles.jsonl"], default_groups=["all"]))
        r = load_retriever(kb_dir)
        feat = Featurizer(r)
        chunks = r.kb.chunks
        real = {
            name: [(candidates(r, q["question"]), set(q["gold"])) for q in read_jsonl(path)]
            for name, path in ANSWERABLE.items()
        }
        results["fused (served order)"] = {name: ranks(feat, rows, None) for name, rows in real.items()}
        dev_pairs = [row for name in DEV_TRAIN for row in real[name]]
        models = {"trained on the dev questions": fit_ranker(feat, dev_pairs)}
        law_rows: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            law_rows.setdefault(_name(c), []).append(i)
        for mode in ("words", "morphemes"):
            t = time.perf_counter()
            made = synthetic_questions(chunks, mode)
            searched = [(q, candidates(r, q), row) for q, row in made]
            model = fit_ranker(feat, [(found, {chunks[row]["doc_id"]}) for _, found, row in searched])
            models[f"trained on synthetic ({mode})"] = model
            x, y = [], []
            for n, (q, found, row) in enumerate(searched):
                if not found.order:
                    continue
                x.append(feat.answer(found, feat.rerank(found, *model)))
                y.append(1)
                allowed = np.ones(len(chunks), dtype=bool)
                allowed[r.kb.doc_rows(chunks[row]["doc_id"]) if n % 2 else law_rows[_name(chunks[row])]] = False
                masked = candidates(r, q, allowed)
                order = feat.rerank(masked, *model, allowed=allowed)
                if order:
                    x.append(feat.answer(masked, order))
                    y.append(0)
            answer_model, answer_scale = _logistic(np.asarray(x), np.asarray(y), intercept=True)
            results[f"training seconds ({mode})"] = round(time.perf_counter() - t, 1)
            for name, path in UNANSWERABLE.items():
                labelled = [(q["question"], 1) for q in read_jsonl(ANSWERABLE[name])]
                labelled += [(q["question"], 0) for q in read_jsonl(path)]
                prob, gate = [], []
                for question, _ in labelled:
                    found = candidates(r, question)
                    if not found.order:  # nothing matched a word of it: refused by either measure
                        prob.append(-1e9)
                        gate.append(0.0)
                        continue
                    order = feat.rerank(found, *model)
                    prob.append(answer_model.decision_function([feat.answer(found, order) / answer_scale])[0])
                    gate.append(evidence(r, question, [Hit(i, 0.0, chunks[i]) for i in found.order[:5]]))
                truth = [label for _, label in labelled]
                results.setdefault("answerability AUC", {})[f"{name}: synthetic model ({mode})"] = round(
                    roc_auc_score(truth, prob), 3
                )
                results["answerability AUC"][f"{name}: served gate (evidence)"] = round(roc_auc_score(truth, gate), 3)
        for label, model in models.items():
            results[label] = {name: ranks(feat, rows, model) for name, rows in real.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key, value in results.items():
        print(f"{key:40s} {json.dumps(value, ensure_ascii=False)}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
