"""Validate the held-out sets in this folder (stdlib only).

Checks: every line is a JSON object; qids are unique across all files and carry the
file's prefix; required fields are present with the right types; statute golds exist as
`id` values in fin_articles.jsonl; KB golds exist as data_ko/kb/<id>.md; every KB
`key_fact` occurs verbatim in each of its gold documents; unanswerable items have an
empty gold list; styles / why values come from the allowed sets; follow-up histories are
[user] or [user, assistant]; statute golds are not golds of questions_dev.jsonl or of
../questions_heldout.jsonl (only its "gold" field is read) and sit on odd line indices.

Usage: python3 benchmarks/heldout/check_heldout.py   (exit status 1 on any failure)
Paths can be overridden with KOFIN_LAWS_DIR and KOFIN_KB_DIR.
"""

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAWS = Path(os.environ.get("KOFIN_LAWS_DIR", REPO.parent / "shared" / "data" / "laws"))
KB = Path(os.environ.get("KOFIN_KB_DIR", REPO / "data_ko" / "kb"))

STYLES = {"colloquial", "long", "indirect"}
LAWX_WHY = {"not-in-corpus", "near-miss", "off-domain"}

SPEC = {
    "laws_answerable.jsonl": ("ho-law-", ["qid", "question", "gold", "answer", "style"]),
    "laws_unanswerable.jsonl": ("ho-lawx-", ["qid", "question", "gold", "why"]),
    "kb_answerable.jsonl": ("ho-kb-", ["qid", "question", "gold", "key_fact", "style"]),
    "kb_unanswerable.jsonl": ("ho-kbx-", ["qid", "question", "gold", "why"]),
    "kb_followups.jsonl": ("ho-fu-", ["qid", "history", "question", "full_question", "gold", "key_fact"]),
}


def main():
    errors = []

    def err(msg):
        errors.append(msg)

    articles = {}
    odd = set()
    with open(LAWS / "fin_articles.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            a = json.loads(line)
            articles[a["id"]] = a
            if i % 2 == 1:
                odd.add(a["id"])
    dev_golds = set()
    with open(LAWS / "questions_dev.jsonl", encoding="utf-8") as f:
        for line in f:
            dev_golds.update(json.loads(line)["gold"])

    # golds of the project's other held-out question file (only its "gold" field is read)
    other = HERE.parent / "questions_heldout.jsonl"
    if other.is_file():
        with open(other, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    dev_golds.update(json.loads(line).get("gold", []))

    kb_cache = {}

    def kb_text(doc_id):
        if doc_id not in kb_cache:
            p = KB / (doc_id + ".md")
            kb_cache[doc_id] = p.read_text(encoding="utf-8") if p.is_file() else None
        return kb_cache[doc_id]

    seen = {}
    counts = {}
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
                if not isinstance(qid, str) or not qid.startswith(prefix):
                    err(f"{where}: bad qid {qid!r}")
                elif qid in seen:
                    err(f"{where}: duplicate qid {qid} (also {seen[qid]})")
                else:
                    seen[qid] = where
                for k in ("question", "answer", "key_fact", "full_question"):
                    if k in fields and (not isinstance(r.get(k), str) or not r.get(k).strip()):
                        err(f"{where}: empty {k}")
                gold = r.get("gold")
                if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
                    err(f"{where}: gold must be a list of strings")
                    continue
                if "style" in fields and r.get("style") not in STYLES:
                    err(f"{where}: bad style {r.get('style')!r}")

                if name == "laws_answerable.jsonl":
                    if not gold:
                        err(f"{where}: empty gold")
                    for g in gold:
                        if g not in articles:
                            err(f"{where}: unknown article {g}")
                        elif g in dev_golds:
                            err(f"{where}: {g} is a dev / questions_heldout gold")
                        elif g not in odd:
                            err(f"{where}: {g} is not on an odd line index")
                elif name in ("laws_unanswerable.jsonl", "kb_unanswerable.jsonl"):
                    if gold:
                        err(f"{where}: unanswerable item has a gold")
                    why = r.get("why")
                    if not isinstance(why, str) or not why:
                        err(f"{where}: empty why")
                    elif name == "laws_unanswerable.jsonl" and why not in LAWX_WHY:
                        err(f"{where}: bad why {why!r}")
                else:  # KB answerable / follow-ups
                    if not gold:
                        err(f"{where}: empty gold")
                    fact = r.get("key_fact", "")
                    for g in gold:
                        text = kb_text(g)
                        if text is None:
                            err(f"{where}: unknown KB document {g}")
                        elif fact and fact not in text:
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
        counts[name] = len(rows)

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
