"""Draw statute golds for heldout2/laws_answerable.jsonl (stdlib only).

Candidates: articles of fin_articles.jsonl on an EVEN 0-based line index, minus every gold
of questions_dev.jsonl, benchmarks/questions_heldout.jsonl, benchmarks/heldout/
laws_answerable.jsonl and benchmarks/dev/laws_styles.jsonl (only the "gold" field of those
files is read), minus definitions (title contains 정의), transitional / supplementary
articles (경과, 부칙) and texts under 120 characters. Shuffled with random.seed(20261203);
taken in order, skipping MANUAL_SKIP (reason recorded) until N are kept.

Usage: python3 draw_law_golds.py [--all]   (prints kept golds; --all also prints skips)
"""

import json
import random
import sys
from pathlib import Path

MAIN = Path("/work/main")
LAWS = Path("/work/shared/data/laws")
N = 80
SEED = 20261203

EXCLUDE_FILES = [
    LAWS / "questions_dev.jsonl",
    MAIN / "benchmarks" / "questions_heldout.jsonl",
    MAIN / "benchmarks" / "heldout" / "laws_answerable.jsonl",
    MAIN / "benchmarks" / "dev" / "laws_styles.jsonl",
]

# id -> reason; filled in while reading the draws in order
MANUAL_SKIP = {
    "여신전문금융업법 제44조의2": "pure cross-reference: a list of 자본시장법/금소법/지배구조법 provisions that do not apply to 공모신기술투자조합",
    "신용정보의 이용 및 보호에 관한 법률 제49조": "boilerplate delegation of powers (권한의 위임ㆍ위탁), nothing concrete to ask",
    "금융실명거래 및 비밀보장에 관한 법률 제8조": "boilerplate 양벌규정 identical across laws",
    "금융혁신지원 특별법 제34조": "boilerplate 양벌규정 identical across laws",
    "금융소비자 보호에 관한 법률 제29조": "declaratory policy duty of the FSC, nothing a reader could ask that singles this article out",
    "자산유동화에 관한 법률 제38조": "boilerplate delegation of FSC tasks to the FSS governor",
    "자본시장과 금융투자업에 관한 법률 제373조의7": "declaratory duty of the exchange, items are cross-references",
    "금융회사의 지배구조에 관한 법률 제42조": "penalty defined only by cross-reference to 제31조; not answerable from the article alone",
}


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
        for i, line in enumerate(f):
            if i % 2:
                continue
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
