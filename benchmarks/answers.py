"""Answers as served: what staff get from `kofin ask` / the chat, refusals included.

Run as:
    .venv/bin/python benchmarks/answers.py                     # dev sets only (what tuning may look at)
    .venv/bin/python benchmarks/answers.py --heldout           # + the blind held-out sets (report only)
    .venv/bin/python benchmarks/answers.py --heldout --scale 300000 --out benchmarks/results/answers.json
    .venv/bin/python benchmarks/answers.py --heldout --heldout2 DIR [DIR ...]  # + more held-out folders, side by side

Every question goes through `Assistant.ask` (serve/ask.py), the function `kofin ask` and the chat
call, anonymous (documents open to all), with an audit log in a temp folder and the answer
settings each KB is served with: the statutes with kofin ask's defaults, the bundled KB with the
chat's (configs/serve/demo.yaml, whose gate `kofin ask --calibrate` chose on the KB dev sets).
A refused question returns no sources, so it counts as a miss in R@5 / MRR@10.

Sets (qid, question, gold; see benchmarks/dev/README.md and benchmarks/heldout/README.md):
- statutes (../shared/data/laws/fin_articles.jsonl): answerable questions -> R@5, MRR@10 over the
  distinct documents among the sources (top_k 10), and the share refused; unanswerable questions
  -> the share refused (goal >= 80%), answerable refused (goal <= 5%);
- bundled KB (data_ko/kb): key fact (a string from the gold document) present in the answer,
  refusals of answerable and unanswerable questions; follow-ups: R@5 of the follow-up asked with
  its history, the same follow-up alone, and the question written out in full;
- `--heldout2 DIR [DIR ...]`: further held-out folders with the files and fields of benchmarks/heldout/
  (laws_answerable, laws_unanswerable, kb_answerable, kb_unanswerable, kb_followups .jsonl; see
  its README), each run the same way, named after its folder (benchmarks/heldout3 -> "heldout3")
  and reported beside dev and held-out in one table at the end;
- conflicts the ingest reports on the bundled KB; p95 latency of the whole answer at the
  statutes' ~3.5k chunks and, with --scale, at N synthetic chunks (benchmarks/retrieval.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kofin.offline import apply_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAWS = ROOT.parent / "shared" / "data" / "laws"
KB_DOCS = ROOT / "data_ko" / "kb"

# (name, file, kind, which KB) -- kind: answerable | unanswerable | keyfact | followup
DEV_SETS = [
    ("laws-dev60", LAWS / "questions_dev.jsonl", "answerable", "laws"),
    ("laws-dev80", HERE / "questions_heldout.jsonl", "answerable", "laws"),  # the older held-out set, tuned on since
    ("laws-styles-dev", HERE / "dev" / "laws_styles.jsonl", "answerable", "laws"),
    ("laws-unanswerable-dev", HERE / "dev" / "laws_unanswerable.jsonl", "unanswerable", "laws"),
    ("kb-keyfact-dev", HERE / "dev" / "kb_answerable.jsonl", "keyfact", "kb"),
    ("kb-unanswerable-dev", HERE / "dev" / "kb_unanswerable.jsonl", "unanswerable", "kb"),
    ("kb-followups-dev", HERE / "dev" / "kb_followups.jsonl", "followup", "kb"),
]
HELDOUT_SETS = [
    ("laws-heldout", HERE / "heldout" / "laws_answerable.jsonl", "answerable", "laws"),
    ("laws-unanswerable-heldout", HERE / "heldout" / "laws_unanswerable.jsonl", "unanswerable", "laws"),
    ("kb-keyfact-heldout", HERE / "heldout" / "kb_answerable.jsonl", "keyfact", "kb"),
    ("kb-unanswerable-heldout", HERE / "heldout" / "kb_unanswerable.jsonl", "unanswerable", "kb"),
    ("kb-followups-heldout", HERE / "heldout" / "kb_followups.jsonl", "followup", "kb"),
]


# A held-out folder's files (benchmarks/heldout/README.md): file stem -> (kind, KB)
HELDOUT_FILES = {
    "laws_answerable": ("answerable", "laws"),
    "laws_unanswerable": ("unanswerable", "laws"),
    "kb_answerable": ("keyfact", "kb"),
    "kb_unanswerable": ("unanswerable", "kb"),
    "kb_followups": ("followup", "kb"),
}
# The fields each kind of set needs (benchmarks/heldout/README.md, "Fields")
REQUIRED = {
    "answerable": ("question", "gold"),
    "unanswerable": ("question", "gold"),
    "keyfact": ("question", "gold", "key_fact"),
    "followup": ("question", "gold", "history", "full_question"),
}
# The side-by-side table: (row label, set name stem, kind, keys); a set's name is "<stem>-<column>"
SUMMARY = [
    ("statutes: R@5 / MRR@10 / refused", "laws", "answerable", ("recall@5", "mrr@10", "refused")),
    ("statutes unanswerable: refused", "laws-unanswerable", "unanswerable", ("refused",)),
    ("KB: key fact / R@5 / refused", "kb-keyfact", "keyfact", ("key_fact", "recall@5", "refused")),
    ("KB unanswerable: refused", "kb-unanswerable", "unanswerable", ("refused",)),
    (
        "follow-ups R@5: history / alone / full",
        "kb-followups",
        "followup",
        ("recall@5_with_history", "recall@5_alone", "recall@5_full"),
    ),
]
SET_NAMES = {  # set name stem -> the held-out file it is read from
    "laws": "laws_answerable",
    "laws-unanswerable": "laws_unanswerable",
    "kb-keyfact": "kb_answerable",
    "kb-unanswerable": "kb_unanswerable",
    "kb-followups": "kb_followups",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_set(path: Path, kind: str) -> list[dict]:
    """A set's rows, each checked for the fields its kind needs; a bad line is named with the fix."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}:{number}: not JSON ({err.msg}); one object per line") from None
        missing = [k for k in REQUIRED[kind] if not isinstance(row, dict) or k not in row]
        if missing:
            raise SystemExit(
                f"{path}:{number}: missing {', '.join(missing)}; a {kind} set needs {', '.join(REQUIRED[kind])} "
                "(benchmarks/heldout/README.md, Fields)"
            )
        if not isinstance(row["gold"], list) or (kind == "unanswerable") != (not row["gold"]):
            want = "[] (the KB cannot answer it)" if kind == "unanswerable" else "a non-empty list of document ids"
            raise SystemExit(f"{path}:{number}: gold must be {want}")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no questions")
    return rows


def heldout2_sets(folder: Path) -> list[tuple[str, Path, str, str]]:
    """The sets of a further held-out folder, named like the first's with the folder's name."""
    if not folder.is_dir():
        raise SystemExit(f"--heldout2 {folder}: not a folder")
    found = [(stem, folder / f"{stem}.jsonl") for stem in HELDOUT_FILES if (folder / f"{stem}.jsonl").is_file()]
    if not found:
        raise SystemExit(f"--heldout2 {folder}: none of {', '.join(f + '.jsonl' for f in HELDOUT_FILES)} is there")
    by_file = {file: stem for stem, file in SET_NAMES.items()}
    return [(f"{by_file[stem]}-{folder.name}", path, *HELDOUT_FILES[stem]) for stem, path in found]


def summary_table(results: dict, extra: list[str]) -> str:
    """Dev, held-out and the further held-out folders side by side (markdown); dev statutes: the styles set."""
    columns = [("dev", "dev"), ("heldout", "held-out")] + [(name, name) for name in extra]
    names = {"laws-dev": "laws-styles-dev"}  # the dev set written in the held-out sets' styles
    lines = ["| measure | " + " | ".join(label for _, label in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, stem, _, keys in SUMMARY:
        cells = []
        for column, _ in columns:
            name = names.get(f"{stem}-{column}", f"{stem}-{column}")
            got = results.get(name)
            cells.append(" / ".join(f"{got[k]:.3f}" for k in keys) + f" (n {got['n']})" if got else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ranked_docs(result) -> list[str]:
    docs: list[str] = []
    for s in result.sources:
        if s["id"] not in docs:
            docs.append(s["id"])
    return docs


def rank_of(docs: list[str], gold: list[str]) -> int | None:
    # KB gold ids are paths without ".md" (data_ko/kb/README.md); a chunk's doc_id keeps the suffix.
    wanted = {g.removesuffix(".md") for g in gold}
    return next((i for i, d in enumerate(docs, 1) if d.removesuffix(".md") in wanted), None)


def _squash(text: str) -> str:
    return re.sub(r"[\s,]", "", text)


def run_answerable(assistant, rows: list[dict]) -> dict:
    r5 = rr = refused = 0.0
    for q in rows:
        result = assistant.ask(q["question"], top_k=10, qid=q.get("qid"))
        rank = rank_of(ranked_docs(result)[:10], q["gold"])
        r5 += bool(rank and rank <= 5)
        rr += 1 / rank if rank else 0.0
        refused += not result.found
    n = len(rows)
    return {"n": n, "recall@5": round(r5 / n, 3), "mrr@10": round(rr / n, 3), "refused": round(refused / n, 3)}


def run_unanswerable(assistant, rows: list[dict]) -> dict:
    refused = sum(not assistant.ask(q["question"], qid=q.get("qid")).found for q in rows)
    return {"n": len(rows), "refused": round(refused / len(rows), 3)}


def run_keyfact(assistant, rows: list[dict]) -> dict:
    present = r5 = refused = 0
    for q in rows:
        result = assistant.ask(q["question"], qid=q.get("qid"))
        present += result.found and _squash(q["key_fact"]) in _squash(result.answer)
        rank = rank_of(ranked_docs(result), q["gold"])
        r5 += bool(rank and rank <= 5)
        refused += not result.found
    n = len(rows)
    return {"n": n, "key_fact": round(present / n, 3), "recall@5": round(r5 / n, 3), "refused": round(refused / n, 3)}


def run_followups(assistant, rows: list[dict]) -> dict:
    hits = {"with_history": 0, "alone": 0, "full": 0}
    present = 0
    for q in rows:
        asked = {
            "with_history": assistant.ask(q["question"], qid=q.get("qid"), history=q["history"]),
            "alone": assistant.ask(q["question"], qid=q.get("qid")),
            "full": assistant.ask(q["full_question"], qid=q.get("qid")),
        }
        for key, result in asked.items():
            rank = rank_of(ranked_docs(result), q["gold"])
            hits[key] += bool(rank and rank <= 5)
        present += _squash(q.get("key_fact", "\0")) in _squash(asked["with_history"].answer)
    n = len(rows)
    return {
        "n": n,
        **{f"recall@5_{k}": round(v / n, 3) for k, v in hits.items()},
        "key_fact_with_history": round(present / n, 3),
    }


RUNNERS = {
    "answerable": run_answerable,
    "unanswerable": run_unanswerable,
    "keyfact": run_keyfact,
    "followup": run_followups,
}


def latency(assistant, rows: list[dict]) -> dict:
    times = []
    for q in rows:
        t = time.perf_counter()
        assistant.ask(q["question"])
        times.append(time.perf_counter() - t)
    return {
        "n": len(times),
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 1),
    }


def main() -> int:
    apply_offline_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", action="store_true", help="also run the blind held-out sets (never tune on them)")
    parser.add_argument(
        "--heldout2",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="also run these held-out folders (the files and fields of benchmarks/heldout/), one column each",
    )
    parser.add_argument(
        "--only", nargs="*", default=[], help="run only these set names (e.g. laws-dev60 kb-keyfact-dev)"
    )
    parser.add_argument(
        "--scale", type=int, default=0, help="also measure answer latency at this many synthetic chunks"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for the two KBs (kept, reused when up to date); default: a temp folder"
    )
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="AnswerSettings overrides for an experiment, e.g. min_coverage=0.3",
    )
    args = parser.parse_args()
    names = [folder.name for folder in args.heldout2]
    if len(set(names)) != len(names) or {"dev", "heldout"} & set(names):
        raise SystemExit(f"--heldout2 {' '.join(names)}: each folder needs its own name, not dev or heldout")
    extra = [s for folder in args.heldout2 for s in heldout2_sets(folder)]

    import yaml

    from kofin.config import load_config
    from kofin.serve.ask import AskConfig, Assistant
    from kofin.serve.conflicts import read_conflicts
    from kofin.serve.ingest import IngestConfig
    from kofin.serve.ingest import main as ingest
    from kofin.serve.serve_config import ServeConfig

    tmp = Path(tempfile.mkdtemp(prefix="kofin-answers-"))
    work = args.work or tmp
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    results: dict = {"settings": overrides}
    try:
        kbs = {"laws": work / "kb-laws", "kb": work / "kb-bundled"}
        t = time.perf_counter()
        ingest(
            IngestConfig(output_dir=kbs["laws"], inputs=[LAWS / "fin_articles.jsonl"], default_groups=["all"])
        )  # public statutes
        results["ingest_laws_s"] = round(time.perf_counter() - t, 1)
        ingest(IngestConfig(output_dir=kbs["kb"], inputs=[KB_DOCS]))
        # Each KB with the answer settings it is served with: the statutes with kofin ask's defaults,
        # the bundled KB with the chat's (configs/serve/demo.yaml: its calibrated gate).
        served = {
            "laws": {},
            "kb": load_config(ServeConfig, ROOT / "configs" / "serve" / "demo.yaml").answer_settings(),
        }
        results["served_min_coverage"] = {
            name: served[name].get("min_coverage", AskConfig.model_fields["min_coverage"].default) for name in kbs
        }
        assistants = {
            name: Assistant(AskConfig(kb=path, audit_log=tmp / f"audit-{name}.jsonl", **(served[name] | overrides)))
            for name, path in kbs.items()
        }
        for a in assistants.values():
            a.retriever.search("워밍업", ("all",), 1)  # Kiwi's model load is not a question's latency
        results["kb_conflicts"] = len(read_conflicts(kbs["kb"]))
        sets = DEV_SETS + (HELDOUT_SETS if args.heldout else []) + extra
        for name, path, kind, kb in sets:
            if args.only and name not in args.only:
                continue
            if not path.exists():
                print(f"{name}: {path} not found, skipped", file=sys.stderr)
                continue
            t = time.perf_counter()
            results[name] = RUNNERS[kind](assistants[kb], read_set(path, kind))
            print(
                f"{name:28s} {json.dumps(results[name], ensure_ascii=False)}  ({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
        laws_questions = read_jsonl(LAWS / "questions_dev.jsonl")
        results["latency_laws"] = latency(assistants["laws"], laws_questions)
        results["latency_laws"]["chunks"] = len(assistants["laws"].retriever.kb)
        print(f"{'latency (statutes)':28s} {results['latency_laws']}", flush=True)
        if args.scale:
            sys.path.insert(0, str(HERE))
            from retrieval import scaled_kb

            from kofin.serve.retrieve import HybridRetriever

            big = assistants["laws"]
            big.retriever = HybridRetriever(scaled_kb(big.retriever.kb, args.scale), big.cfg.retrieval)
            results[f"latency_{args.scale}"] = latency(big, laws_questions)
            print(f"{'latency (' + str(args.scale) + ')':28s} {results[f'latency_{args.scale}']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + summary_table(results, names))
    if args.out:
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
