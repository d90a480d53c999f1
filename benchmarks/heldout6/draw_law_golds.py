"""Draw statute golds for heldout6/laws_answerable.jsonl (stdlib only).

Adapted from benchmarks/heldout5/draw_law_golds.py. Candidates: articles of fin_articles.jsonl
on ANY line index, minus every gold of questions_dev.jsonl, benchmarks/questions_heldout.jsonl,
benchmarks/heldout/laws_answerable.jsonl, benchmarks/heldout2/laws_answerable.jsonl,
benchmarks/heldout3/laws_answerable.jsonl,
benchmarks/heldout4/laws_answerable.jsonl, benchmarks/heldout5/laws_answerable.jsonl and
benchmarks/dev/laws_styles.jsonl (only the "gold"
field of those files is read), minus definitions (title contains 정의), transitional /
supplementary articles (경과, 부칙) and texts under 120 characters. Shuffled with
random.seed(20261212); taken in order, skipping MANUAL_SKIP (reason recorded) until N are kept.

Usage: python3 draw_law_golds.py [--all]   (prints kept golds; --all also prints skips)
"""

import json
import random
import sys
from pathlib import Path

MAIN = Path("/work/main")
LAWS = Path("/work/shared/data/laws")
N = 60
SEED = 20261212

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

# id -> reason; filled in while reading the draws in order
MANUAL_SKIP = {}


def excluded_golds():
    golds = set()
    for p in EXCLUDE_FILES:
        with open(p, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    golds.update(json.loads(line).get("gold", []))
    return golds


def candidates():
    ex = excluded_golds()
    out = []
    with open(LAWS / "fin_articles.jsonl", encoding="utf-8") as f:
        for _i, line in enumerate(f):
            a = json.loads(line)
            t = a.get("title", "")
            if a["id"] in ex or "정의" in t or "경과" in t or "부칙" in t or "부칙" in a["id"]:
                continue
            if len(a["text"]) < 120:
                continue
            out.append(a)
    return out


def draw():
    cands = candidates()
    random.seed(SEED)
    random.shuffle(cands)
    kept, skipped = [], []
    for a in cands:
        if len(kept) >= N:
            break
        if a["id"] in MANUAL_SKIP:
            skipped.append((a["id"], MANUAL_SKIP[a["id"]]))
        else:
            kept.append(a)
    return kept, skipped, len(cands)


if __name__ == "__main__":
    kept, skipped, n = draw()
    print(f"# {n} candidates; {len(kept)} kept; {len(skipped)} skipped")
    for a in kept:
        print(a["id"], "|", a["title"])
    if "--all" in sys.argv:
        for i, r in skipped:
            print("SKIP", i, "|", r)
