"""Draw the 60 gold articles of laws_styles.jsonl (run from the repo root or anywhere).

Rule: articles whose 0-based line index in fin_articles.jsonl is even; skip definitions,
purpose, transitional, cross-reference-only (준용/적용/다른 법률과의 관계) articles, articles under
150 characters, and any gold id of questions_dev.jsonl; random.seed(7), shuffle, take in order
with at most 4 per statute until 60.
"""

import collections
import json
import pathlib
import random
import sys

LAWS = pathlib.Path(__file__).resolve().parents[3] / "shared/data/laws"  # <repo>/../shared
if not LAWS.exists():
    LAWS = pathlib.Path("/work/shared/data/laws")
SKIP_TITLE = ("정의", "목적", "경과", "부칙", "준용", "적용", "다른 법률과의 관계")


def draw(n=60, cap=4):
    arts = [json.loads(line) for line in open(LAWS / "fin_articles.jsonl", encoding="utf-8")]
    dev = [json.loads(line) for line in open(LAWS / "questions_dev.jsonl", encoding="utf-8")]
    taken = {g for d in dev for g in d["gold"]}
    pool = [
        a
        for i, a in enumerate(arts)
        if i % 2 == 0
        and not any(s in a["title"] for s in SKIP_TITLE)
        and len(a["text"]) >= 150
        and a["id"] not in taken
    ]
    random.seed(7)
    random.shuffle(pool)
    out, per = [], collections.Counter()
    for a in pool:
        if per[a["law"]] >= cap:
            continue
        per[a["law"]] += 1
        out.append(a)
        if len(out) == n:
            break
    return out, len(pool)


if __name__ == "__main__":
    out, npool = draw()
    print("pool", npool, "statutes", len({a["law"] for a in out}), file=sys.stderr)
    for a in out:
        print(json.dumps(a, ensure_ascii=False))
