"""The bundled Korean knowledge base and other document sources, read as plain documents.

A knowledge-base document is a Markdown file with YAML front matter:

    ---
    title: 가람 스마트 정기예금 상품설명서
    department: 수신상품부
    groups: [all]
    effective: 2026-03-01
    doc_type: 상품설명서
    ---
    # 가람 스마트 정기예금 상품설명서
    ## 1. 상품 개요 ...

Its id is its path under the knowledge-base root without `.md` (`deposit/smart-term-deposit`).
Statute-style JSONL records (`id`, `title`, `text`, optional `law`/`article`/`metadata`) read into
the same `Document` shape, so every builder serves the bundled KB and ../shared/data/laws alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path

import yaml

from kofin.errors import KofinError

FRONT_MATTER_KEYS = ("title", "department", "groups", "effective", "doc_type")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


class DocumentError(KofinError, ValueError):
    """A source document that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Section:
    heading: str  # nearest heading text, e.g. "2. 가입 대상" or "제4조(금융거래의 비밀보장)"
    path: tuple[str, ...]  # headings from the top, e.g. ("가람 스마트 정기예금", "2. 가입 대상")
    text: str  # body under the heading, headings of subsections excluded


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str  # Markdown body (front matter removed)
    groups: tuple[str, ...] = ("all",)
    department: str = ""
    effective: str = ""
    doc_type: str = ""
    source: str = ""  # file the document came from
    metadata: dict = field(default_factory=dict, hash=False, compare=False)

    def sections(self) -> list[Section]:
        return split_sections(self.text, self.title)


def read_utf8(path: Path) -> str:
    """A text file's content; a UTF-8 BOM (Excel exports) is dropped, and a file in another
    encoding (CP949/EUC-KR exports are common in Korean banks) is named with the line to fix."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DocumentError(
            f"{path}:{line}: not UTF-8 (byte {data[err.start]:#04x}); CP949/EUC-KR exports must be "
            f"converted first, e.g. `iconv -f cp949 -t utf-8 {Path(path).name} > fixed.jsonl`"
        ) from None


def bundled_kb_dir() -> Path:
    """Folder of the knowledge base shipped inside the package (data_ko/kb)."""
    return Path(str(resources.files("kofin.data_ko") / "kb"))


def read_markdown_document(path: Path, root: Path) -> Document:
    raw = read_utf8(path)
    meta, body = _split_front_matter(raw, path)
    doc_id = path.relative_to(root).with_suffix("").as_posix()
    groups = meta.get("groups", ["all"])
    if isinstance(groups, str):
        groups = [groups]
    effective = meta.get("effective", "")
    if isinstance(effective, date):
        effective = effective.isoformat()
    title = str(meta.get("title") or _first_heading(body) or path.stem)
    return Document(
        doc_id=doc_id,
        title=title,
        text=body.strip() + "\n",
        groups=tuple(str(g) for g in groups),
        department=str(meta.get("department", "")),
        effective=str(effective),
        doc_type=str(meta.get("doc_type", "")),
        source=str(path),
        metadata={k: v for k, v in meta.items() if k not in FRONT_MATTER_KEYS},
    )


def _split_front_matter(raw: str, path: Path) -> tuple[dict, str]:
    if not raw.startswith("---"):
        return {}, raw
    end = raw.find("\n---", 3)
    if end < 0:
        raise DocumentError(f"{path}:1: front matter opened with '---' is never closed; add a '---' line after it")
    try:
        meta = yaml.safe_load(raw[3:end]) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 2 if mark else 1
        raise DocumentError(f"{path}:{line}: front matter is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(meta, dict):
        raise DocumentError(f"{path}:2: front matter must be key: value lines")
    body = raw[end + 4 :]
    return meta, body.lstrip("\n")


def _first_heading(body: str) -> str | None:
    for line in body.splitlines():
        m = _HEADING.match(line)
        if m:
            return m.group(2)
    return None


def split_sections(text: str, title: str = "") -> list[Section]:
    """Split Markdown into sections at headings, keeping each section's heading path."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            heading = stack[-1][1] if stack else title
            path = tuple(h for _, h in stack) or ((title,) if title else ())
            sections.append(Section(heading=heading, path=path, text=body))
        buf.clear()

    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        m = None if in_code else _HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
        else:
            buf.append(line)
    flush()
    return sections


def iter_markdown_documents(root: Path) -> Iterator[Document]:
    root = Path(root)
    if root.is_file():
        yield read_markdown_document(root, root.parent)
        return
    for path in sorted(root.rglob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        yield read_markdown_document(path, root)


# How a statute record's title is written ("은행법 제30조(제목)", below) and read back by the KB's
# users: the statute, and the article it is.
_STATUTE_TITLE = re.compile(r"^((.+?)\s*제\d+조(?:의\d+)?)(?:\(|\s|$)")


def statute_article(title: str) -> tuple[str, str] | None:
    """(statute, article) of a statute article's title — ("은행법", "은행법 제30조") — else None."""
    m = _STATUTE_TITLE.match(title)
    return (m.group(2).strip(), m.group(1).replace(" ", "")) if m else None


def iter_jsonl_documents(path: Path) -> Iterator[Document]:
    """Document records, one JSON object per line: `text` required; `id`, `title`, `groups` optional."""
    path = Path(path)
    for lineno, line in enumerate(read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DocumentError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise DocumentError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DocumentError(
                f"{path}:{lineno}: field 'text' is missing or empty; every record needs the document text"
            )
        meta = row.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        groups = row.get("groups") or meta.get("groups") or ["all"]
        doc_id = str(row.get("id") or f"{path.stem}-{lineno}")
        title = str(row.get("title") or doc_id)
        if row.get("law") and row.get("article"):
            # Statutes: "은행법 제30조(제목)" is how staff cite them.
            title = f"{row['law']} {row['article']}({row.get('title', '')})"
        yield Document(
            doc_id=doc_id,
            title=title,
            text=text.strip() + "\n",
            groups=tuple(groups) if isinstance(groups, list) else (str(groups),),
            effective=str(row.get("effective", "")),
            source=f"{path}:{lineno}",
            metadata={k: v for k, v in row.items() if k not in ("text", "metadata")} | meta,
        )


def iter_documents(path: Path | None = None) -> Iterator[Document]:
    """Documents from a Markdown folder/file or a JSONL file; the bundled KB when `path` is None."""
    if path is None:
        yield from iter_markdown_documents(bundled_kb_dir())
        return
    path = Path(path)
    if not path.exists():
        raise DocumentError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        yield from iter_jsonl_documents(path)
    else:
        yield from iter_markdown_documents(path)


def corpus_text(path: Path | None = None) -> Iterator[str]:
    """Plain text of every document, for tokenizer training."""
    for doc in iter_documents(path):
        yield f"{doc.title}\n{doc.text}"
