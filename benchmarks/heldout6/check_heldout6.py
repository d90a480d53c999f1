"""Validate the heldout6 sets in this folder (stdlib only).

Adapted from benchmarks/heldout5/check_heldout5.py. Checks: every line is a JSON object;
qids are unique across all files and carry the file's prefix (h6-law-, h6-lawx-, h6-kb-,
h6-kbx-, h6-fu-); required fields are present and non-empty; styles and `why` values come
from the allowed sets; statute golds exist as `id` values in fin_articles.jsonl, are not golds
of questions_dev.jsonl, benchmarks/questions_heldout.jsonl,
benchmarks/heldout/laws_answerable.jsonl, benchmarks/heldout2/laws_answerable.jsonl,
benchmarks/heldout3/laws_answerable.jsonl, benchmarks/heldout4/laws_answerable.jsonl,
benchmarks/heldout5/laws_answerable.jsonl or
benchmarks/dev/laws_styles.jsonl (only the "gold" field of those files is read), are not
definitions / transitional / supplementary articles; each answerable statute item has exactly
one gold; KB golds exist as data_ko/kb/<id>.md and are open to all staff (front matter
`groups: [all]`); every `key_fact` occurs verbatim in each of its gold documents; unanswerable
items have an empty gold list; follow-up histories are [user] or [user, assistant]; the statute
golds equal the output of draw_law_golds.py; row counts are 60/15/15/9/10 (reduced for time, see README),
styles are evenly
spread in every file that has them (max-min <= 1) and the statute unanswerable why mix is 6/5/4.

Usage: python3 check_heldout6.py   (exit status 1 on any failure)
Paths can be overridden with KOFIN_LAWS_DIR, KOFIN_KB_DIR and KOFIN_MAIN.
"""

import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN = Path(os.environ.get("KOFIN_MAIN", "/work/main"))
LAWS = Path(os.environ.get("KOFIN_LAWS_DIR", "/work/shared/data/laws"))
KB = Path(os.environ.get("KOFIN_KB_DIR", MAIN / "data_ko" / "kb"))

STYLES = {"colloquial", "long", "indirect", "terse", "relayed"}
LAWX_WHY = {"not-in-corpus", "near-miss", "off-domain"}
KBX_WHY = {
    "live-data",
    "product-not-in-kb",
    "service-not-in-kb",
    "branch-info-not-in-kb",
    "other-bank",
    "off-domain",
}

EXCLUDE_FILES = [
    LAWS / "questions_dev.jsonl",
    MAIN / "benchmarks" / "questions_heldout.jsonl",
    MAIN / "benchmarks" / "heldout" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "heldout2" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "heldout3" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "heldout4" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "heldout5" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "dev" / "laws_styles.jsonl",
]

SPEC = {
    "laws_answerable.jsonl": ("h6-law-", ["qid", "question", "gold", "answer", "style"]),
    "laws_unanswerable.jsonl": ("h6-lawx-", ["qid", "question", "gold", "why", "style"]),
    "kb_answerable.jsonl": ("h6-kb-", ["qid", "question", "gold", "key_fact", "style"]),
    "kb_unanswerable.jsonl": ("h6-kbx-", ["qid", "question", "gold", "why", "style"]),
    "kb_followups.jsonl": ("h6-fu-", ["qid", "history", "question", "full_question", "gold", "key_fact"]),
}


def main():
    errors = []
    err = errors.append

    articles = {}
    with open(LAWS / "fin_articles.jsonl", encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            articles[a["id"]] = a

    excluded = set()
    for p in EXCLUDE_FILES:
        if not p.is_file():
            err(f"exclusion file missing: {p}")
            continue
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    excluded.update(json.loads(line).get("gold", []))  # only "gold" is read

    kb_cache = {}

    def kb_text(doc_id):
        if doc_id not in kb_cache:
            p = KB / (doc_id + ".md")
            kb_cache[doc_id] = p.read_text(encoding="utf-8") if p.is_file() else None
        return kb_cache[doc_id]

    def open_to_all(text):
        m = re.match(r"---\n(.*?)\n---", text, re.S)
        if not m:
            return False
        g = re.search(r"^groups:\s*\[([^\]]*)\]", m.group(1), re.M)
        return bool(g) and [x.strip() for x in g.group(1).split(",")] == ["all"]

    seen, counts, law_golds, lawx_why = {}, {}, [], {}
    for name, (prefix, fields) in SPEC.items():
        path = HERE / name
        if not path.is_file():
            err(f"{name}: missing file")
            continue
        rows = []
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                where = f"{name}:{ln}"
                if not line.strip():
                    err(f"{where}: blank line")
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    err(f"{where}: invalid JSON ({e})")
                    continue
                if not isinstance(r, dict):
                    err(f"{where}: not an object")
                    continue
                rows.append(r)
                for k in fields:
                    if k not in r:
                        err(f"{where}: missing field {k}")
                qid = r.get("qid")
                if not isinstance(qid, str) or not re.fullmatch(re.escape(prefix) + r"\d{3}", qid):
                    err(f"{where}: bad qid {qid!r}")
                elif qid in seen:
                    err(f"{where}: duplicate qid {qid} (also {seen[qid]})")
                else:
                    seen[qid] = where
                for k in ("question", "answer", "key_fact", "full_question", "why"):
                    if k in fields and (not isinstance(r.get(k), str) or not r.get(k).strip()):
                        err(f"{where}: empty {k}")
                if "style" in fields and r.get("style") not in STYLES:
                    err(f"{where}: bad style {r.get('style')!r}")
                gold = r.get("gold")
                if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
                    err(f"{where}: gold must be a list of strings")
                    continue

                if name == "laws_answerable.jsonl":
                    if len(gold) != 1:
                        err(f"{where}: expected exactly one gold article")
                    for g in gold:
                        law_golds.append(g)
                        if g not in articles:
                            err(f"{where}: unknown article {g}")
                        elif g in excluded:
                            err(f"{where}: {g} is an excluded (dev / earlier held-out) gold")
                        else:
                            a = articles[g]
                            t = a.get("title", "")
                            if "정의" in t or "경과" in t or "부칙" in t or "부칙" in g or len(a["text"]) < 120:
                                err(f"{where}: {g} is a definitions/transitional/short article")
                elif name in ("laws_unanswerable.jsonl", "kb_unanswerable.jsonl"):
                    if gold:
                        err(f"{where}: unanswerable item has a gold")
                    allowed = LAWX_WHY if name == "laws_unanswerable.jsonl" else KBX_WHY
                    if name == "laws_unanswerable.jsonl":
                        lawx_why[r.get("why")] = lawx_why.get(r.get("why"), 0) + 1
                    if r.get("why") not in allowed:
                        err(f"{where}: bad why {r.get('why')!r}")
                else:  # KB answerable / follow-ups
                    if not gold:
                        err(f"{where}: empty gold")
                    fact = r.get("key_fact", "")
                    for g in gold:
                        text = kb_text(g)
                        if text is None:
                            err(f"{where}: unknown KB document {g}")
                            continue
                        if not open_to_all(text):
                            err(f"{where}: KB document {g} is not groups: [all]")
                        if fact and fact not in text:
                            err(f"{where}: key_fact {fact!r} not verbatim in {g}")
                    if name == "kb_followups.jsonl":
                        h = r.get("history")
                        ok = (
                            isinstance(h, list)
                            and len(h) in (1, 2)
                            and all(
                                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("content").strip()
                                for m in h
                            )
                            and h[0].get("role") == "user"
                            and (len(h) == 1 or h[1].get("role") == "assistant")
                        )
                        if not ok:
                            err(f"{where}: history must be [user] or [user, assistant]")
                        if not isinstance(r.get("question"), str) or not r.get("question").strip():
                            err(f"{where}: empty question")
                        if r.get("question", "").strip() == r.get("full_question", "").strip():
                            err(f"{where}: question and full_question are identical")
        counts[name] = len(rows)
        if "style" in fields and rows:
            sc = {st: sum(1 for x in rows if x.get("style") == st) for st in STYLES}
            if max(sc.values()) - min(sc.values()) > 1:
                err(f"{name}: styles not evenly spread {sc}")

    # the statute golds must be exactly the seeded draw, in order
    sys.path.insert(0, str(HERE))
    try:
        sys.dont_write_bytecode = True
        import draw_law_golds

        kept, _, _ = draw_law_golds.draw()
        drawn = [a["id"] for a in kept]
        if drawn != law_golds:
            err("laws_answerable.jsonl golds differ from draw_law_golds.py output")
    except Exception as e:  # noqa: BLE001
        err(f"could not run draw_law_golds.py: {e}")
    if len(set(law_golds)) != len(law_golds):
        err("laws_answerable.jsonl: duplicate gold articles")

    expected = {
        "laws_answerable.jsonl": 60,
        "laws_unanswerable.jsonl": 15,
        "kb_answerable.jsonl": 15,
        "kb_unanswerable.jsonl": 9,
        "kb_followups.jsonl": 10,
    }
    for name, n in expected.items():
        if counts.get(name) != n:
            err(f"{name}: expected {n} rows, found {counts.get(name)}")
    if lawx_why != {"not-in-corpus": 6, "near-miss": 5, "off-domain": 4}:
        err(f"laws_unanswerable.jsonl: why mix {lawx_why} is not 6/5/4")

    for name, n in counts.items():
        print(f"{name}: {n} rows")
    if errors:
        print(f"{len(errors)} problem(s):")
        for e in errors:
            print("  " + e)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
