#!/usr/bin/env python3
"""Check the dev (tuning) sets in this folder. Exit status 1 on any problem.

Checks: every line is a JSON object with the expected fields, qids are unique across all
files, statute gold ids exist in fin_articles.jsonl, KB gold ids exist as
data_ko/kb/<id>.md, each key_fact occurs verbatim in every one of its gold documents,
unanswerable sets have empty gold, follow-ups have a user first turn.
Usage: python3 benchmarks/dev/check_dev.py [--laws PATH_TO_fin_articles.jsonl]
"""

import argparse
import collections
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
KB = REPO / "data_ko" / "kb"
FIELDS = {
    "laws_styles.jsonl": ({"qid", "question", "gold", "answer", "style"}, "dv-law-"),
    "laws_unanswerable.jsonl": ({"qid", "question", "gold", "why"}, "dv-lawx-"),
    "kb_answerable.jsonl": ({"qid", "question", "gold", "key_fact", "style"}, "dv-kb-"),
    "kb_unanswerable.jsonl": ({"qid", "question", "gold", "why"}, "dv-kbx-"),
    "kb_followups.jsonl": ({"qid", "history", "question", "full_question", "gold", "key_fact"}, "dv-fu-"),
}
STYLES = {"laws_styles.jsonl": {"colloquial", "long", "indirect"}, "kb_answerable.jsonl": {"polite", "colloquial"}}
WHY = {"not-in-corpus", "near-miss", "off-domain"}


def find_laws(arg):
    for p in ([pathlib.Path(arg)] if arg else []) + [
        REPO.parent / "shared/data/laws/fin_articles.jsonl",
        pathlib.Path("/work/shared/data/laws/fin_articles.jsonl"),
    ]:
        if p.exists():
            return p
    sys.exit("fin_articles.jsonl not found; pass --laws")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--laws")
    args = ap.parse_args()
    law_ids = {json.loads(line)["id"] for line in open(find_laws(args.laws), encoding="utf-8")}
    errors, seen = [], set()
    kb_text = {}

    def kb_doc(doc_id):
        if doc_id not in kb_text:
            p = KB / f"{doc_id}.md"
            kb_text[doc_id] = p.read_text(encoding="utf-8") if p.is_file() else None
        return kb_text[doc_id]

    for name, (fields, prefix) in FIELDS.items():
        path = HERE / name
        if not path.exists():
            errors.append(f"{name}: missing")
            continue
        stat = collections.Counter()
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            where = f"{name}:{n}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: invalid JSON ({e})")
                continue
            if not isinstance(r, dict) or set(r) != fields:
                errors.append(f"{where}: fields {sorted(r) if isinstance(r, dict) else type(r)} != {sorted(fields)}")
                continue
            qid = r["qid"]
            if not qid.startswith(prefix):
                errors.append(f"{where}: qid {qid} lacks prefix {prefix}")
            if qid in seen:
                errors.append(f"{where}: duplicate qid {qid}")
            seen.add(qid)
            if not isinstance(r["question"], str) or not r["question"].strip():
                errors.append(f"{where}: empty question")
            gold = r["gold"]
            if not isinstance(gold, list):
                errors.append(f"{where}: gold not a list")
                continue
            if "why" in r:
                if gold:
                    errors.append(f"{where}: unanswerable with non-empty gold")
                if r["why"] not in WHY:
                    errors.append(f"{where}: bad why {r['why']}")
                stat[r["why"]] += 1
            elif not gold:
                errors.append(f"{where}: empty gold")
            if name.startswith("laws_"):
                for g in gold:
                    if g not in law_ids:
                        errors.append(f"{where}: unknown article id {g!r}")
            else:
                for g in gold:
                    text = kb_doc(g)
                    if text is None:
                        errors.append(f"{where}: no KB file data_ko/kb/{g}.md")
                    elif "key_fact" in r and r["key_fact"] not in text:
                        errors.append(f"{where}: key_fact {r['key_fact']!r} not verbatim in {g}")
            if name in STYLES:
                if r["style"] not in STYLES[name]:
                    errors.append(f"{where}: bad style {r['style']}")
                stat[r["style"]] += 1
            if name == "kb_followups.jsonl":
                h = r["history"]
                if not (
                    isinstance(h, list)
                    and 1 <= len(h) <= 2
                    and h[0].get("role") == "user"
                    and all(set(t) == {"role", "content"} for t in h)
                    and (len(h) == 1 or h[1].get("role") == "assistant")
                ):
                    errors.append(f"{where}: bad history")
                stat["with_assistant" if len(h) == 2 else "user_only"] += 1
        total = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"{name}: {total} rows {dict(stat)}")
    # laws_styles gold must be exactly the reproducible draw (seed 7, even line indices)
    sys.path.insert(0, str(HERE))
    sys.dont_write_bytecode = True
    import draw_law_gold

    drawn = [a["id"] for a in draw_law_gold.draw()[0]]
    rows = [json.loads(line) for line in open(HERE / "laws_styles.jsonl", encoding="utf-8")]
    if [r["gold"] for r in rows] != [[i] for i in drawn]:
        errors.append("laws_styles.jsonl: gold ids differ from draw_law_gold.py output")
    for e in errors:
        print("ERROR", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
