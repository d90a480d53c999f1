"""The chat under load: N simultaneous logged-in sessions asking different questions at once.

Run as:
    .venv/bin/python benchmarks/serve_concurrency.py                      # 20 sessions, demo config
    .venv/bin/python benchmarks/serve_concurrency.py --sessions 40 --rounds 2
    .venv/bin/python benchmarks/serve_concurrency.py --sessions 40 --replicas 2 --store postgresql

With `--replicas 2 --store postgresql` a throwaway PostgreSQL cluster (tests/pg_cluster.py) holds the
shared state and two servers run on two ports; sessions alternate between them, as behind a load
balancer. Every run checks the audit chain afterwards (intact, and one answer line per answer).

Starts `kofin serve --config configs/serve/demo.yaml` in its own process (the server gets its own
interpreter, so the clients' threads do not share its GIL) on a free port with a scratch
output_dir, the bundled KB (built if missing) and the extractive backend. Each session logs in
with gradio_client (a demo user, round robin), then all sessions are released together by a
barrier and each asks a different bundled-KB question through the Gradio queue, reading the
stream. Time to first token = submit until the first streamed update that carries answer text;
full answer = submit until the final, verified answer. Writes benchmarks/results/serve_*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USERS = {"teller": "teller-demo-1", "compliance": "comply-demo-1", "admin": "admin-demo-1"}
QUESTIONS = [
    "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?",
    "예금자보호 한도는 얼마인가요?",
    "해외송금 한도와 필요한 서류는 무엇인가요?",
    "신용카드를 분실했을 때 어떻게 해야 하나요?",
    "휴면예금은 어떻게 찾을 수 있나요?",
    "체크카드와 신용카드의 차이는 무엇인가요?",
    "적금 만기 후 이자율은 어떻게 되나요?",
    "리볼빙 결제란 무엇인가요?",
    "외화예금도 예금자보호가 되나요?",
    "환전 수수료 우대는 어떻게 받나요?",
    "신용대출 중도상환수수료는 얼마인가요?",
    "청년 적금 가입 조건은 무엇인가요?",
    "현금서비스 이자는 어떻게 계산되나요?",
    "고액현금거래보고 기준금액은 얼마인가요?",
    "연금 계좌의 우대 혜택은 무엇인가요?",
    "해외 카드 결제 수수료는 얼마인가요?",
    "외국인 근로자 해외송금은 어떻게 하나요?",
    "펀드 투자 위험 등급은 무엇인가요?",
    "주택담보대출의 LTV란 무엇인가요?",
    "금융소비자 청약철회권은 무엇인가요?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kofin serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            urllib.request.urlopen(url + "/login", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"kofin serve did not answer on {url} within {timeout}s")


def _text(history) -> str:
    if not history:
        return ""
    content = history[-1].get("content") if isinstance(history[-1], dict) else history[-1]
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def session(url: str, user: str, question: str, barrier: threading.Barrier, out: list, rounds: int) -> None:
    from gradio_client import Client

    try:
        client = Client(url + "/", auth=(user, USERS[user]), verbose=False)
    except Exception as err:  # noqa: BLE001 - a failed login counts as an error of this session
        barrier.wait()
        out.append({"user": user, "error": f"login: {err}"})
        return
    barrier.wait()
    for _ in range(rounds):
        started, first = time.perf_counter(), None
        try:
            job = client.submit(question, [], api_name="/ask")
            for update in job:
                text = _text(update[0])
                if first is None and text and text != "…":
                    first = time.perf_counter() - started
            history, _, sources = job.result()
            full = time.perf_counter() - started
            found = "kofin-source" in sources
            out.append(
                {
                    "user": user,
                    "question": question,
                    "ttft_s": first if first is not None else full,
                    "full_s": full,
                    "found": found,
                    "chars": len(_text(history)),
                }
            )
        except Exception as err:  # noqa: BLE001 - counted and reported, never hidden
            out.append({"user": user, "question": question, "error": f"{type(err).__name__}: {err}"})


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="questions each session asks, one after another")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "serve" / "demo.yaml")
    parser.add_argument(
        "--kb", type=Path, default=ROOT / "runs" / "kb-demo", help="built from the config's build_from if missing"
    )
    parser.add_argument("--concurrency-limit", type=int, help="override the config's queue workers")
    parser.add_argument(
        "--replicas", type=int, default=1, help="servers sharing the state (more than one needs --store postgresql)"
    )
    parser.add_argument(
        "--store", choices=("file", "postgresql"), default="file", help="postgresql: a throwaway cluster on 127.0.0.1"
    )
    args = parser.parse_args()
    if args.replicas > 1 and args.store != "postgresql":
        parser.error("--replicas above 1 share their state through PostgreSQL: add --store postgresql")

    with ExitStack() as stack:
        dsn = stack.enter_context(_cluster()) if args.store == "postgresql" else None
        results, wall, chain = run_replicas(args, dsn)
    ok = [r for r in results if "error" not in r]
    errors = [r for r in results if "error" in r]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "command": " ".join(sys.argv),
        "replicas": args.replicas,
        "store": args.store,
        **chain,
        "sessions": args.sessions,
        "rounds": args.rounds,
        "requests": len(results),
        "errors": len(errors),
        "found": sum(r["found"] for r in ok),
        "wall_s": round(wall, 2),
        "ttft_s": {
            k: round(f(([r["ttft_s"] for r in ok]) or [0.0]), 3)
            for k, f in (("p50", statistics.median), ("p95", lambda v: pct(v, 0.95)), ("max", max))
        },
        "full_s": {
            k: round(f(([r["full_s"] for r in ok]) or [0.0]), 3)
            for k, f in (("p50", statistics.median), ("p95", lambda v: pct(v, 0.95)), ("max", max))
        },
        "error_messages": sorted({r["error"][:200] for r in errors}),
    }
    suffix = f"_{args.replicas}replicas-{args.store}" if args.replicas > 1 or args.store != "file" else ""
    out = ROOT / "benchmarks" / "results" / f"serve_concurrency_{args.sessions}x{args.rounds}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 1 if errors or not chain["audit_intact"] or chain["audit_answer_lines"] != len(ok) else 0


def _cluster():
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import throwaway_cluster

    return throwaway_cluster()


def run_replicas(args, dsn: str | None) -> tuple[list[dict], float, dict]:
    """Start the servers, run the sessions (alternating between servers), stop them, check the chain."""
    scratch = Path(tempfile.mkdtemp(prefix="kofin-serve-bench-"))
    urls: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        for n in range(args.replicas):
            port = free_port()
            out = scratch / f"replica-{n}"
            overrides = [f"kb={args.kb.resolve()}", f"output_dir={out}", f"server_port={port}"]
            if args.concurrency_limit:
                overrides.append(f"concurrency_limit={args.concurrency_limit}")
            if dsn:
                overrides += ["store.kind=postgresql", f"store.dsn={dsn}"]
            command = [sys.executable, "-m", "kofin.cli", "serve", "--config", str(args.config), *overrides]
            procs.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=dict(os.environ, GRADIO_TEMP_DIR=str(out / "tmp")),
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            wait_up(urls[-1], procs[-1])  # one at a time: the first builds the KB when it is missing
        results: list[dict] = []
        barrier = threading.Barrier(args.sessions)
        users = list(USERS)
        threads = [
            threading.Thread(
                target=session,
                args=(
                    urls[i % len(urls)],
                    users[i % len(users)],
                    QUESTIONS[i % len(QUESTIONS)],
                    barrier,
                    results,
                    args.rounds,
                ),
            )
            for i in range(args.sessions)
        ]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    return results, wall, audit_chain(dsn, scratch / "replica-0" / "audit.jsonl")


def audit_chain(dsn: str | None, path: Path) -> dict:
    from kofin.serve.audit import verify_audit_target

    target = dsn or str(path)
    check = verify_audit_target(target)
    if dsn:
        import psycopg

        with psycopg.connect(dsn) as db:
            lines = [json.loads(line) for (line,) in db.execute("SELECT line FROM kofin_audit ORDER BY seq")]
    else:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    return {
        "audit_intact": check.ok,
        "audit_lines": len(lines),
        "audit_answer_lines": sum("event" not in r for r in lines),
        "audit_login_events": sum(r.get("event") == "login" for r in lines),
    }


if __name__ == "__main__":
    sys.exit(main())
