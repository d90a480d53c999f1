"""Conflicting statements across a knowledge base's documents: the same rate, limit, threshold,
period or code stated with different values, so that even a perfect retriever could cite a wrong one.

Run as:
    python -m kofin.serve.conflicts runs/kb-demo       # what `kofin ingest` found (the KB's conflicts.json)
    python -m kofin.serve.conflicts data_ko/kb         # detect over a folder of documents, no KB written
`kofin ingest` runs `find_conflicts` on every KB it writes and stores the result as `conflicts.json`
(hashed in the manifest); `read_conflicts` loads it and `conflicts_among` picks, at answer time, the
disagreements between chunks a user was shown. A listing names documents and quotes them: show the
whole list to admins only, and to a user only what `conflicts_among` returns for chunks they may read.

What a statement is (its value, qualifiers, label and subject) is serve/statements.py.

Two statements of DIFFERENT documents conflict when their values differ and: same kind of value
and same qualifiers; their subjects share at least 3 specific terms (2 when numbers qualify them)
and their labels at least one; each label is mostly named by the other's subject (weighted by how
rare each term is across documents) and not both name much the other never mentions; they measure
the same thing (not a rate vs a limit) and their words after the value agree; and the documents are
about the same thing: their titles share what the labels say, one title is a subset of the other,
or one statement names what is distinctive in the other's title (a product-specific rate is not
compared with another product's). A copied sentence is compared value by value. Deliberately
conservative: a false alarm costs the admins' trust; the bundled KB reports none.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kofin.data_ko.corpus import statute_article
from kofin.errors import KofinError
from kofin.serve.statements import KIND_NAMES, MEASURES, RATE_WORDS, FoundStatement, Statement, extract_statements

CONFLICTS_FILE = "conflicts.json"
FORMAT_VERSION = 1


@dataclass
class Conflict:
    subject: str  # what the statements are about, as written in one of them
    kind: str  # rate, percentage points, amount, period, age, score, count, code
    statements: list[Statement] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"subject": self.subject, "kind": self.kind, "statements": [asdict(s) for s in self.statements]}

    @classmethod
    def from_json(cls, data: dict) -> Conflict:
        return cls(data["subject"], data["kind"], [Statement(**s) for s in data.get("statements", [])])


# ---------------------------------------------------------------- matching

MIN_SHARED = 3  # specific subject terms two statements must share (2 when qualifiers match too)
MIN_LABEL_COVER = 0.6  # share of each label's weight the other statement's subject must contain (0.5 qualified)
MAX_UNSHARED = 0.15  # both labels naming this much the other never mentions: two different things
MAX_POSTING = 2000  # statements one label term may pair up before it is too common to find candidates by


def _weights(found: list[FoundStatement]) -> dict[str, float]:
    """Rarity of each term across documents (the words that tell facts apart weigh most)."""
    docs: dict[str, set[str]] = defaultdict(set)
    for f in found:
        docs[f.st.doc_id] |= f.terms["subject"] | f.terms["title"]
    n = len(docs)
    df: dict[str, int] = defaultdict(int)
    for terms in docs.values():
        for t in terms:
            df[t] += 1
    return {t: math.log((n + 1) / d) for t, d in df.items()}


def _cover(part: set[str], whole: set[str], w: dict[str, float]) -> float:
    total = sum(w.get(t, 0.0) for t in part)
    return sum(w.get(t, 0.0) for t in part & whole) / total if total > 0 else 0.0


def _same_subject(a: FoundStatement, b: FoundStatement, w: dict[str, float]) -> bool:
    sa, sb, la, lb = a.terms["subject"], b.terms["subject"], a.terms["label"], b.terms["label"]
    qualified = any(not q.startswith("ref:") for q in a.quals)  # "6개월 이상 9개월 미만": already specific
    if len(sa & sb) < (2 if qualified else MIN_SHARED) or not la & lb:
        return False
    for x, y in ((a, b), (b, a)):  # "총급여의 25%" is not about what never mentions 총급여
        if not y.terms["base"] and not x.terms["base"] & RATE_WORDS and not x.terms["base"] <= y.terms["subject"]:
            return False
    ma, mb = {t for t in la if t in MEASURES}, {t for t in lb if t in MEASURES}
    if ma and mb and not ma & mb:
        return False  # a rate of X is not a limit of X
    ra, rb = a.terms["around"], b.terms["around"]
    if ra and rb and max(_cover(ra, rb, w), _cover(rb, ra, w)) < 0.5:
        return False  # "2개월 이내에 ... 결정" and "6개월 이내의 ... 영업정지": different acts
    need = MIN_LABEL_COVER - (0.1 if qualified else 0.0)
    ca, cb = _cover(la, sb, w), _cover(lb, sa, w)
    if ca < need or cb < need or (1 - ca > MAX_UNSHARED and 1 - cb > MAX_UNSHARED):
        return False
    return _same_topic(a, b, w)


def _same_topic(a: FoundStatement, b: FoundStatement, w: dict[str, float]) -> bool:
    """The two documents are about the same thing: their titles share what the statements are
    about, one title says nothing the other does not, or one statement names the other's topic."""
    ta, tb = a.terms["title"], b.terms["title"]
    shared = ta & tb & (a.terms["label"] | b.terms["label"])
    weight = lambda terms: sum(w.get(t, 0.0) for t in terms)  # noqa: E731
    if shared and weight(shared) >= 0.5 * min(weight(ta), weight(tb)):
        return True
    only_a, only_b = ta - tb, tb - ta
    return not only_a or not only_b or only_b <= a.terms["subject"] or only_a <= b.terms["subject"]


def _same_code_subject(a: FoundStatement, b: FoundStatement) -> bool:
    # Two BICs disagree only when both passages speak of the same place (a shared specific word).
    near = lambda f: f.terms["label"] | f.terms["context"]  # noqa: E731
    return a.canon == b.canon and bool(near(a) & near(b) - {"swift", "bic", "코드"})


def find_conflicts(chunks: list[dict]) -> list[Conflict]:
    """Statements of different documents that give the same subject different values."""
    found = extract_statements(chunks)
    w = _weights(found)
    blocks: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(found):
        blocks[(f.kind, f.quals)].append(i)
    parent = list(range(len(found)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked: set[int] = set()
    for (kind, _), members in blocks.items():
        by_term: dict[str, list[int]] = defaultdict(list)
        for i in members:
            for t in found[i].terms["label"] if kind != "code" else {""}:
                by_term[t].append(i)
        for i in members:
            a = found[i]
            keys = a.terms["label"] if kind != "code" else {""}
            # A label word hundreds of statements share tells nothing apart: find candidates through rarer ones.
            postings = [by_term[t] for t in keys if len(by_term[t]) <= MAX_POSTING] or (
                [] if kind != "code" else [members]
            )
            for j in {j for posting in postings for j in posting if j > i}:
                b = found[j]
                if a.st.doc_id == b.st.doc_id or (a.place[:1] == b.place[:1] and a.place != b.place):
                    continue  # the same sentence in two documents (a copy) is compared value by value
                if _different_articles(a.st.title, b.st.title):
                    continue  # two provisions of statutes rule on different things, whatever words they share
                if kind == "code":
                    match = a.texts["code"] != b.texts["code"] and _same_code_subject(a, b)
                else:
                    match = not _same_value(a, b) and _same_subject(a, b, w)
                if match:
                    parent[root(i)] = root(j)
                    linked |= {i, j}
    groups: dict[int, list[FoundStatement]] = defaultdict(list)
    for i in sorted(linked):
        groups[root(i)].append(found[i])
    out = []
    for group in groups.values():
        statements, seen = [], set()
        for f in sorted(group, key=lambda f: (f.st.effective or "", f.st.doc_id), reverse=True):
            if (f.st.chunk_id, f.st.value) not in seen:  # every chunk saying it: any may be an answer's source
                seen.add((f.st.chunk_id, f.st.value))
                statements.append(f.st)
        kind = group[0].kind.split("/")[0]
        subject = min((f.label for f in group), key=lambda s: (s == "같은 항목", len(s)))
        out.append(
            Conflict(subject, KIND_NAMES.get(kind, "amount" if kind.startswith("money") else "count"), statements)
        )
    return sorted(out, key=lambda c: (c.subject, c.statements[0].doc_id))


def _different_articles(title_a: str, title_b: str) -> bool:
    """Both documents are statute articles, and not the same article (two versions of one article
    may disagree; 서민금융법 제9조's committee of 11 and 제61조's of 15 are two committees)."""
    a, b = statute_article(title_a), statute_article(title_b)
    return a is not None and b is not None and a[1] != b[1]


def _same_value(a: FoundStatement, b: FoundStatement) -> bool:
    """Same numbers and, for a share of something ("기본이율 × 30%"), the same base when both name one."""
    if a.terms["base"] and b.terms["base"] and a.terms["base"] != b.terms["base"]:
        return False
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a.canon, b.canon, strict=True))


# ---------------------------------------------------------------- reading and answering


def conflicts_json(conflicts: list[Conflict]) -> dict:
    """The document `kofin ingest` writes (through its atomic writer, hashed in the manifest) as KB/conflicts.json."""
    return {"format": FORMAT_VERSION, "conflicts": [c.to_json() for c in conflicts]}


def read_conflicts(kb_dir: Path) -> list[Conflict]:
    """The conflicts `kofin ingest` found in a KB; [] for a KB written before conflicts were found."""
    path = Path(kb_dir) / CONFLICTS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Conflict.from_json(c) for c in data.get("conflicts", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise KofinError(
            f"{path}: not a conflicts file kofin ingest wrote ({err}); "
            f"re-run `kofin ingest --kb {kb_dir} --rebuild PATHS...`"
        ) from None


def conflicts_among(conflicts: list[Conflict], chunk_ids: set[str]) -> list[Conflict]:
    """The disagreements between the given chunks (e.g. an answer's sources): each conflict cut down
    to its statements in those chunks, kept when they still come from 2 chunks and differ in value.
    Statements outside the chunks are dropped, so a user never sees a document they were not shown."""
    out = []
    for c in conflicts:
        inside = [s for s in c.statements if s.chunk_id in chunk_ids]
        if len({s.chunk_id for s in inside}) >= 2 and len({s.value for s in inside}) >= 2:
            out.append(Conflict(c.subject, c.kind, inside))
    return out


def describe(c: Conflict) -> str:
    """One line for a person: '예금자보호 한도: 5천만원 (deposit/a, 2026-01-01) vs 1억원 (deposit/b, 2025-06-01)'."""
    parts = [f"{s.value} ({s.doc_id}, {s.effective or 'no effective date'})" for s in c.statements]
    return f"{c.subject}: " + " vs ".join(dict.fromkeys(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kofin.serve.conflicts", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a KB folder (reads conflicts.json) or a folder/file of documents")
    args = parser.parse_args(argv)
    if (args.path / CONFLICTS_FILE).is_file():
        conflicts = read_conflicts(args.path)
    elif (args.path / "chunks.jsonl").is_file():
        from kofin.serve.kb import read_chunks

        conflicts = find_conflicts(read_chunks(args.path))
    else:
        conflicts = find_conflicts(_chunks_of(args.path))
    for c in conflicts:
        print(describe(c))
    print(f"{len(conflicts)} conflicting statement{'s' if len(conflicts) != 1 else ''}", file=sys.stderr)
    return 0


def _chunks_of(path: Path) -> list[dict]:
    from dataclasses import asdict as as_dict

    from kofin.serve.chunking import ChunkingConfig, chunk_document
    from kofin.serve.loaders import SUFFIXES, load_file

    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.name.lower() != "readme.md")
    )
    root = path.parent if path.is_file() else path
    return [
        as_dict(c)
        for f in files
        for doc in load_file(f, f.relative_to(root).as_posix())
        for c in chunk_document(doc, ChunkingConfig())
    ]


if __name__ == "__main__":
    sys.exit(main())
