"""Command lines of `kofin ingest`, `ask`, `serve` and `audit` (thin: parse, build the config, call the stage).

Run as:
    kofin ingest --kb KB_DIR PATHS... [--remove PATH ...] [--rebuild] [--config YAML] [key.path=value ...]
    kofin ask --kb KB_DIR [--user U --users FILE] [--json] [--top-k K] "질문"
    kofin ask --kb KB_DIR --questions Q.jsonl --out A.jsonl
    kofin serve --config configs/serve/demo.yaml [--check] [key.path=value ...]
    kofin serve hash-password
    kofin audit verify AUDIT.jsonl
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

from kofin.stage_cli import add_key_flags, config_help, key_flag_overrides, load_stage_config, run_reporting_errors

# A config key path: lowercase dotted identifiers (`min_coverage`, `retrieval.top_k`).
_KEY_PATH = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*")


def _split(model, items: list[str]) -> tuple[list[str], list[str]]:
    """Positional words: `key.path=value` overrides of `model` vs the rest (paths, the question).

    A word is an override when its key is one of the model's key paths, or looks like one and is
    close to one (a typo: `min_coverag=0.2` gets load_config's "did you mean"). Anything else,
    `LTV=70%이면` included, is a path or part of the question."""
    from kofin.config import describe_fields

    keys = [k for k, _, _ in describe_fields(model)]
    names = keys + sorted({k.rsplit(".", 1)[-1] for k in keys})
    tops = {k.split(".", 1)[0] for k in keys}

    def is_override(word: str) -> bool:
        key, sep, _ = word.partition("=")
        if not sep or not _KEY_PATH.fullmatch(key):
            return False
        return (
            key in keys or key.split(".", 1)[0] in tops or bool(difflib.get_close_matches(key, names, n=1, cutoff=0.8))
        )

    overrides = [w for w in items if is_override(w)]
    return overrides, [w for w in items if not is_override(w)]


def _json_text(data, **kw) -> str:
    """JSON as UTF-8 can carry it: a lone surrogate left in some text becomes U+FFFD instead of
    failing the print or the write after the answer was found."""
    return re.sub(r"[\ud800-\udfff]", "\ufffd", json.dumps(data, ensure_ascii=False, **kw))


def _readable_errors(what: str, fn):
    """Run `fn`; text that cannot be encoded (a lone surrogate from a JSON "\\ud800" escape or
    undecodable argv bytes) becomes an error that says so and names the input, not a traceback."""
    from kofin.errors import KofinError

    try:
        return fn()
    except UnicodeError as err:
        raise KofinError(
            f"{what}: text that is not valid Unicode ({err}); remove lone surrogates "
            "such as \\ud800 from it and ask again"
        ) from None


# ---------------------------------------------------------------- ingest


INGEST_FLAGS = {"--kb": "output_dir"}
ASK_FLAGS = {
    "--kb": "kb",
    "--users": "users_file",
    "--top-k": "retrieval.top_k",
    "--backend": "generation.backend",
    "--model-path": "generation.model_path",
    "--base-url": "generation.base_url",
}


def ingest_parser() -> argparse.ArgumentParser:
    from kofin.serve.ingest import IngestConfig

    parser = argparse.ArgumentParser(
        prog="kofin ingest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ingest Markdown, text, PDF, DOCX, HTML, HWPX and JSONL files into a knowledge base "
        "(incremental; unreadable files are reported and skipped).",
        epilog=config_help(IngestConfig),
    )
    add_key_flags(parser, IngestConfig, INGEST_FLAGS)
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders to ingest; KEY=VALUE words are config overrides"
    )
    parser.add_argument(
        "--remove",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="remove this file's (or folder's) chunks from the KB",
    )
    parser.add_argument("--rebuild", action="store_true", help="ignore the existing KB and ingest from scratch")
    parser.add_argument("--config", type=Path, metavar="YAML", help="ingest config, e.g. configs/ingest/demo.yaml")
    parser.add_argument("--quiet", action="store_true", help="print only problems")
    return parser


def ingest_cli(argv: list[str]) -> int:
    from kofin.serve.ingest import IngestConfig, main

    prog = "kofin ingest"
    args = ingest_parser().parse_intermixed_args(argv)
    overrides, paths = _split(IngestConfig, args.paths)
    overrides += key_flag_overrides(args, INGEST_FLAGS)
    if paths:
        overrides.append("inputs=" + json.dumps([str(Path(p).resolve()) for p in paths], ensure_ascii=False))
    if args.remove:
        overrides.append("remove=" + json.dumps([str(p.resolve()) for p in args.remove], ensure_ascii=False))
    if args.rebuild:
        overrides.append("rebuild=true")
    if not args.config and not args.kb:
        print(f"{prog}: give --kb KB_DIR (or --config YAML with output_dir)", file=sys.stderr)
        return 2
    cfg = load_stage_config(IngestConfig, args, prog, overrides)
    if not cfg.inputs and not cfg.remove and not cfg.rebuild:
        print(f"{prog}: nothing to do; name files or folders to ingest, or --remove PATH", file=sys.stderr)
        return 2

    def act() -> None:
        report = main(cfg)
        for path, reason in report.skipped:
            print(f"{prog}: skipped {path}: {reason}", file=sys.stderr)
        if not args.quiet:
            print(f"{prog}: {report.summary()}")

    return run_reporting_errors(prog, act)


# ---------------------------------------------------------------- ask


def ask_parser() -> argparse.ArgumentParser:
    from kofin.serve.ask import AskConfig

    parser = argparse.ArgumentParser(
        prog="kofin ask",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Answer a question (or a JSONL file of questions) from a knowledge base, with verified citations.",
        epilog=config_help(AskConfig),
    )
    parser.add_argument(
        "question",
        nargs="*",
        help="the question; a word `key.path=value` whose key is a config key below is an override "
        "(other words, `LTV=70%%이면` too, are the question)",
    )
    add_key_flags(parser, AskConfig, ASK_FLAGS)
    parser.add_argument("--user", help="answer as this user: only documents in their groups are searched")
    parser.add_argument("--json", action="store_true", help="print the answer and its ranked sources as JSON")
    parser.add_argument(
        "--questions", type=Path, metavar="Q.jsonl", help="answer every line (qid, question) of this file"
    )
    parser.add_argument("--out", type=Path, metavar="A.jsonl", help="with --questions: one JSON result per line")
    parser.add_argument(
        "--calibrate",
        type=Path,
        nargs="+",
        metavar="LABELLED.jsonl",
        help="instead of answering: propose min_coverage for this KB from questions labelled with "
        "`gold` ([] = the KB cannot answer it), e.g. benchmarks/dev/kb_answerable.jsonl kb_unanswerable.jsonl",
    )
    parser.add_argument(
        "--max-refused",
        type=float,
        default=0.05,
        metavar="SHARE",
        help="with --calibrate: the most answerable questions the gate may refuse (default 0.05)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.8,
        metavar="P",
        help="with --calibrate: how sure the refusal budget must hold beyond the labelled sample (default 0.8)",
    )
    config = parser.add_mutually_exclusive_group()
    config.add_argument("--config", type=Path, metavar="YAML", help="ask config (AskConfig keys below)")
    config.add_argument(
        "--serve-config",
        type=Path,
        metavar="YAML",
        help="answer (or --calibrate) as the chat does: the KB, users file and answer settings of a serve "
        "config, e.g. configs/serve/demo.yaml; overrides and --kb still apply",
    )
    return parser


def _ask_config(args: argparse.Namespace, prog: str, overrides: list[str]):
    """The ask config: from --config, or from the chat's --serve-config (its KB, users file and
    answer settings, so a gate calibrated here is the one the chat serves), plus overrides."""
    from kofin.config import ConfigError, load_config
    from kofin.serve.ask import AskConfig
    from kofin.serve.serve_config import ServeConfig

    if args.serve_config is None:
        if args.config is not None and _is_serve_config(args.config):
            print(f"{prog}: {args.config} is a serve config; give it as --serve-config {args.config}", file=sys.stderr)
            raise SystemExit(2)
        return load_stage_config(AskConfig, args, prog, overrides)
    try:
        served = load_config(ServeConfig, args.serve_config)
        settings = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in served.answer_settings().items()}
        defaults = {"kb": str(served.kb), "users_file": str(served.users_file) if served.users_file else None}
        return load_config(AskConfig, None, overrides, defaults=defaults | settings)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_serve_config(path: Path) -> bool:
    """Whether a YAML file has keys only the chat's config has (server_port, build_from, sessions)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # load_config reports what is wrong with it
    return isinstance(data, dict) and bool({"server_port", "build_from", "sessions", "login"} & set(data))


def ask_cli(argv: list[str]) -> int:
    from kofin.data_ko.korean import clean_text
    from kofin.serve.ask import AskConfig

    prog = "kofin ask"
    args = ask_parser().parse_intermixed_args(argv)
    overrides, words = _split(AskConfig, args.question)
    overrides += key_flag_overrides(args, ASK_FLAGS)
    question = clean_text(
        " ".join(words)
    ).strip()  # a lone surrogate (undecodable argv bytes) cannot reach UTF-8 output
    if args.calibrate and (question or args.questions):
        print(
            f"{prog}: --calibrate reads its questions from the labelled files; give no question or --questions",
            file=sys.stderr,
        )
        return 2
    if not args.calibrate and (bool(question) == bool(args.questions) or (args.questions and not args.out)):
        print(f"{prog}: give one question, or --questions Q.jsonl --out A.jsonl", file=sys.stderr)
        return 2
    if not args.kb and not args.config and not args.serve_config:
        print(f"{prog}: give --kb KB_DIR (a folder written by `kofin ingest`)", file=sys.stderr)
        return 2
    cfg = _ask_config(args, prog, overrides)

    def act() -> None:
        from kofin.serve.ask import Assistant, answer_file

        _check_users_file(cfg.users_file)
        assistant = Assistant(cfg)
        if args.calibrate:
            from kofin.serve.calibrate import choose, measure, read_labelled

            rows = read_labelled(args.calibrate)
            print(f"{prog}: {len(rows)} labelled questions through the answer path ...", file=sys.stderr)
            print(choose(measure(assistant.retriever, cfg, rows), args.max_refused, args.confidence).report())
            return
        if args.questions:
            n = _readable_errors(
                f"questions file {args.questions}",
                lambda: answer_file(assistant, args.questions, args.out.resolve(), args.user, cfg.retrieval.top_k),
            )
            print(f"{prog}: answered {n} questions -> {args.out}")
            return
        groups = assistant.groups_of(args.user)
        if not assistant.retriever.kb.allowed(groups).any():
            # Otherwise every answer is "찾지 못했습니다" with no hint why (statutes ingested with the defaults).
            print(
                f"{prog}: no document of {cfg.kb} is open to groups {', '.join(groups)}; documents without access "
                "groups are for administrators unless ingested with default_groups='[all]' — or ask as a user "
                "(--user NAME --users FILE)",
                file=sys.stderr,
            )
        streaming = cfg.generation.backend != "extractive" and not args.json
        on_token = (lambda piece: print(piece, end="", flush=True)) if streaming else None
        result = _readable_errors(
            "the question", lambda: assistant.ask(question, args.user, cfg.retrieval.top_k, on_token=on_token)
        )
        if args.json:
            print(_json_text(result.to_json(), indent=2))
            return
        print(_plain_answer(result, streaming))

    return run_reporting_errors(prog, act)


USERS_FORMATS = (
    "accepted formats: a mapping of user to groups, one line each (`kim: [branch, credit]`), "
    "or the chat's users file (`users:` list of `- name: kim` with `groups: [branch, credit]`; "
    "password_hash and admin are read by the chat only)"
)


def _check_users_file(path: Path | None) -> None:
    """Load the users file once up front so a rejected format is answered with both accepted ones."""
    from kofin.errors import KofinError
    from kofin.serve.ask import load_users

    try:
        load_users(path)
    except KofinError as err:
        message = str(err) or f"users_file {path}: not a users file"
        raise KofinError(message if "users:" in message else f"{message}; {USERS_FORMATS}") from None


def _plain_answer(result, streamed: bool) -> str:
    lines = ["\n--- 검증 후 답변 ---"] if streamed else []
    if getattr(result, "rewritten_query", None):
        lines.append(f"(검색한 질문: {result.rewritten_query})")
    if getattr(result, "caveat", None):
        lines.append(f"[주의] {result.caveat}")
    lines.append(result.answer)
    if getattr(result, "refusal", None):
        lines.append(f"[사유] {result.refusal}")
    lines += [f"  [확인 필요] {f['sentence']} ({f['reason']})" for f in result.flagged]
    for c in getattr(result, "conflicts", None) or []:
        lines.append(f"  [출처 간 불일치] {c.get('subject') or ''}")
        lines += [
            f"    - {st.get('value')} — {st.get('title')} (시행 {st.get('effective') or '미상'})"
            for st in c.get("statements") or []
        ]
    if result.sources:
        lines.append("\n출처:")
        for s in result.sources:
            page = f", p.{s['page']}" if s.get("page") else ""
            mark = "*" if s["cited"] else " "
            lines.append(f" {mark}[{s['n']}] {s['title']} — {s.get('section') or ''}{page} ({s['id']})")
            lines += [f"      ⚠ 문서 속 지시문 — 답변에 쓰지 않음: {line}" for line in s.get("suspicious") or []]
    # What the terminal can show: a lone surrogate left in a source would fail the whole print.
    return re.sub(r"[\ud800-\udfff]", "\ufffd", "\n".join(lines))


# ---------------------------------------------------------------- serve


def serve_parser() -> argparse.ArgumentParser:
    from kofin.serve.serve_config import ServeConfig

    parser = argparse.ArgumentParser(
        prog="kofin serve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the Gradio chat for bank staff: login, streamed cited answers, sources panel, "
        "document admin, hash-chained audit log. `kofin serve hash-password` makes a password hash for the users list.",
        epilog=config_help(ServeConfig),
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override a config key, e.g. server_port=7861"
    )
    parser.add_argument("--config", type=Path, metavar="YAML", help="serve config, e.g. configs/serve/demo.yaml")
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the config, users and KB (building it if missing), then exit without serving",
    )
    return parser


def serve_cli(argv: list[str]) -> int:
    prog = "kofin serve"
    if argv[:1] == ["hash-password"]:
        return hash_password_cli(argv[1:])
    args = serve_parser().parse_args(argv)
    if not args.config:
        print(f"{prog}: give --config YAML, e.g. --config configs/serve/demo.yaml", file=sys.stderr)
        return 2
    from kofin.serve.serve_config import ServeConfig

    cfg = load_stage_config(ServeConfig, args, prog)

    def act() -> None:
        from kofin.serve.app import main, prepare

        if args.check:
            chat = prepare(cfg)
            print(f"{prog}: ok — {chat.describe()}")
            return
        main(cfg)

    return run_reporting_errors(prog, act)


def hash_password_cli(argv: list[str]) -> int:
    import getpass

    from kofin.serve.users import hash_password

    parser = argparse.ArgumentParser(
        prog="kofin serve hash-password",
        description="Print a salted scrypt hash for the `password_hash` of a chat user. "
        "Reads the password twice from the terminal, or one line from standard input when piped.",
    )
    parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("비밀번호: ")
        if getpass.getpass("비밀번호 확인: ") != password:
            print("kofin serve hash-password: the two passwords differ; nothing printed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("kofin serve hash-password: use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


# ---------------------------------------------------------------- audit


def audit_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kofin audit",
        description="Check the hash-chained audit log written by `kofin ask` and `kofin serve`. "
        "Exit 0 when intact; 1 with the first bad line and what is wrong (edited, deleted, reordered, truncated).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="verify every line's hash and the chain")
    verify.add_argument(
        "path",
        metavar="AUDIT.jsonl|postgresql://…",
        help="an audit log file, or the DSN of the replicas' PostgreSQL store (store.dsn)",
    )
    args = parser.parse_args(argv)
    from kofin.errors import KofinError
    from kofin.serve.audit import verify_audit_target

    target = args.path
    if not target.startswith(("postgresql://", "postgres://")) and not Path(target).is_file():
        print(f"kofin audit: no such audit log: {target}", file=sys.stderr)
        return 2
    try:
        check = verify_audit_target(target)
    except KofinError as err:  # the database cannot be reached
        print(f"kofin audit: {err}", file=sys.stderr)
        return 2
    if check.ok:
        print(check.summary())
        return 0
    print(check.summary(), file=sys.stderr)
    return 1
