"""Seeded draw of gold articles for laws_answerable.jsonl (stdlib only).

Candidates: articles of fin_articles.jsonl whose 0-based line index is ODD, minus
  - any article id that is a gold in questions_dev.jsonl or in the "gold" field of
    benchmarks/questions_heldout.jsonl (only that field is read),
  - definitions articles (title contains '정의'), transitional/supplementary articles
    (title contains '경과' or '부칙'), and texts shorter than 120 characters.
The candidates are shuffled with random.seed(20261202); the draw order is printed.
Articles were then taken in this order, with a manual skip (see MANUAL_SKIP) for any
article that proved unsuitable on reading (e.g. pure cross-reference / deemed-official
rules with nothing to ask about).
"""

import json
import os
import random
import sys

LAWS = "/work/shared/data/laws"
HERE = os.path.dirname(os.path.abspath(__file__))
arts = [json.loads(line) for line in open(f"{LAWS}/fin_articles.jsonl", encoding="utf-8")]
excl = set()
for line in open(f"{LAWS}/questions_dev.jsonl", encoding="utf-8"):
    excl.update(json.loads(line)["gold"])
for line in open(os.path.join(HERE, "..", "questions_heldout.jsonl"), encoding="utf-8"):
    excl.update(json.loads(line)["gold"])
cands = []
for i, a in enumerate(arts):
    if i % 2 == 0 or a["id"] in excl:
        continue
    t = a["title"]
    if "정의" in t or "경과" in t or "부칙" in t or len(a["text"]) < 120:
        continue
    cands.append((i, a["id"]))
random.seed(20261202)
random.shuffle(cands)
# Draw positions (0-based, in the shuffled order above) skipped on reading, with the reason.
MANUAL_SKIP = {
    1: "boilerplate vicarious-liability clause (양벌규정) shared verbatim by many statutes",
    17: "pure cross-reference list (「상법」의 준용)",
    29: "penalty list by article number only; offences not described in the article",
    46: "forfeiture by cross-reference only; offences not described in the article",
    57: "boilerplate refund-of-overpaid-penalty clause shared by many statutes",
    64: "boilerplate penalty deferral/instalment clause shared by many statutes",
    72: "boilerplate enforcement-fine clause shared by many statutes",
    73: "boilerplate registration clause (등기), nothing specific to ask",
    95: "boilerplate penalty deferral/instalment clause shared by many statutes",
    102: "pure cross-reference list of inapplicable provisions",
    107: "boilerplate vicarious-liability clause (양벌규정) shared by many statutes",
}
N_GOLD = 100


def selected():
    """The gold articles actually used, in draw order: first N_GOLD non-skipped draws."""
    out = []
    for k, (i, aid) in enumerate(cands):
        if k in MANUAL_SKIP:
            continue
        out.append((k, i, aid))
        if len(out) == N_GOLD:
            break
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--raw":
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 140
        for k, (i, aid) in enumerate(cands[:n]):
            print(k, i, aid)
    else:
        for k, i, aid in selected():
            print(k, i, aid)
