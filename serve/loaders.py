"""Read source files into plain documents: Markdown, text, PDF, DOCX, HTML, HWPX and JSONL.

Run as: a library; `kofin ingest --kb KB_DIR PATHS...` calls `load_file` for every file.

Every loader returns `LoadedDoc`s whose `blocks` hold text in a light Markdown: headings as
`#` lines (so chunking knows the nearest section), tables as `| a | b |` rows (so chunking can
keep them whole), and the page number where the format has pages (PDF). A file that cannot be
read raises `LoaderError` naming the file and what to do; ingest reports it and goes on.

Access groups come only from what a document declares (Markdown front matter `groups:`, a JSONL
record's `groups`); a document that declares none has `groups == ()`, and ingest gives it its
configured `default_groups` (nobody but admins unless configured), never silently `all`.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from kofin.data_ko.corpus import (
    DocumentError,
    _split_front_matter,
    iter_jsonl_documents,
    read_markdown_document,
    read_utf8,
)
from kofin.errors import KofinError

SUFFIXES = (".md", ".markdown", ".txt", ".pdf", ".docx", ".html", ".htm", ".hwpx", ".jsonl")


class LoaderError(KofinError):
    """A file that cannot be ingested; the message names it and says why."""


@dataclass
class Block:
    text: str
    page: int | None = None


@dataclass
class LoadedDoc:
    doc_id: str
    title: str
    blocks: list[Block]
    groups: tuple[str, ...] = ()  # () = the document declares no access groups (ingest applies default_groups)
    metadata: dict = field(default_factory=dict)


def load_file(path: Path, doc_id: str) -> list[LoadedDoc]:
    """The documents in `path` (one, or one per record for JSONL); `doc_id` names a single-document file."""
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise LoaderError(f"{path}: unknown format '{suffix or path.name}'; kofin reads {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        raise LoaderError(f"{path}: the file is empty")
    if suffix in _ZIPPED:
        check_unzipped_size(path)
    try:
        docs = reader(path, doc_id)
    except (LoaderError, DocumentError):
        raise
    except Exception as err:  # noqa: BLE001 - pypdf/python-docx/lxml raise many types on a broken file; each one means "this file is unreadable"
        raise LoaderError(f"{path}: not a readable {suffix[1:].upper()} file ({type(err).__name__}: {err})") from None
    docs = [d for d in docs if any(b.text.strip() for b in d.blocks)]
    if not docs:
        raise LoaderError(
            f"{path}: no text found (a scanned PDF needs OCR first; an empty document has nothing to index)"
        )
    return docs


# DOCX and HWPX are zip archives: a few compressed kilobytes can unpack to gigabytes (a zip bomb),
# so their unpacked size is checked from the archive's directory before any member is read.
_ZIPPED = (".docx", ".hwpx")
MAX_UNZIPPED_MB = 200
MAX_ZIP_RATIO = 200  # office XML compresses ~5-20x; hundreds of times is a bomb, not a document


def check_unzipped_size(path: Path, max_mb: float = MAX_UNZIPPED_MB) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            unpacked = sum(info.file_size for info in z.infolist())
    except zipfile.BadZipFile:
        raise LoaderError(f"{path}: not a readable {path.suffix[1:].upper()} file (not a zip archive)") from None
    packed = max(path.stat().st_size, 1)
    if unpacked > max_mb * 2**20 or unpacked / packed > MAX_ZIP_RATIO:
        raise LoaderError(
            f"{path}: unpacks to {unpacked / 2**20:.0f} MB from {packed / 2**20:.2f} MB "
            f"(limits {max_mb:g} MB, {MAX_ZIP_RATIO}x); refused as a possible zip bomb"
        )


# ---------------------------------------------------------------- text formats


def _markdown(path: Path, doc_id: str) -> list[LoadedDoc]:
    doc = read_markdown_document(path, path.parent)  # front matter: title, groups, department ...
    meta = dict(doc.metadata) | {
        k: v for k, v in (("department", doc.department), ("effective", doc.effective), ("doc_type", doc.doc_type)) if v
    }
    # The corpus reader fills in `all` for a document without `groups:`; only a declared list counts.
    declared = _split_front_matter(read_utf8(path), path)[0].get("groups")
    return [LoadedDoc(doc_id, doc.title, [Block(doc.text)], doc.groups if declared else (), meta)]


def _plain_text(path: Path, doc_id: str) -> list[LoadedDoc]:
    text = read_utf8(path)
    return [LoadedDoc(doc_id, _first_line(text) or path.stem, [Block(text)])]


def _jsonl(path: Path, doc_id: str) -> list[LoadedDoc]:
    out = []
    for doc in iter_jsonl_documents(path):
        meta = {k: v for k, v in doc.metadata.items() if k not in ("id", "title", "groups")}
        declared = doc.metadata.get(
            "groups"
        )  # the record's own `groups` (or its metadata's); the reader defaults to `all`
        out.append(
            LoadedDoc(
                doc.doc_id, doc.title, [Block(doc.text)], tuple(str(g) for g in doc.groups) if declared else (), meta
            )
        )
    return out


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()[:120]
    return ""


# ---------------------------------------------------------------- PDF (text layer, pages kept)


def _pdf(path: Path, doc_id: str) -> list[LoadedDoc]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise LoaderError(f"{path}: the PDF is encrypted; export an unencrypted copy to ingest it")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except PdfReadError as err:
        raise LoaderError(f"{path}: not a readable PDF ({err})") from None
    blocks = [Block(text, page=i) for i, text in enumerate(pages, 1) if text.strip()]
    return [LoadedDoc(doc_id, str(title).strip() or _first_line("\n".join(pages)) or path.stem, blocks)]


# ---------------------------------------------------------------- DOCX


def _docx(path: Path, doc_id: str) -> list[LoadedDoc]:
    import docx  # python-docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    lines: list[str] = []
    for item in document.iter_inner_content():  # paragraphs and tables in reading order
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            level = _heading_level(item.style.name if item.style is not None else "")
            lines.append(f"{'#' * level} {text}" if level else text)
        elif isinstance(item, Table):
            lines.extend(_table_lines([[cell.text for cell in row.cells] for row in item.rows]))
    title = (document.core_properties.title or "").strip()
    return [LoadedDoc(doc_id, title or _first_line("\n".join(lines)) or path.stem, [Block("\n".join(lines))])]


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    m = re.match(r"(?:Heading|제목)\s*(\d)", style)
    return min(int(m.group(1)), 6) if m else 0


def _table_lines(rows: list[list[str]]) -> list[str]:
    """A table as Markdown rows, blank line before and after so chunking sees one unit."""
    clean = [[" ".join(c.split()).replace("|", "/") for c in row] for row in rows if any(c.strip() for c in row)]
    if not clean:
        return []
    out = ["", "| " + " | ".join(clean[0]) + " |", "|" + "---|" * len(clean[0])]
    out += ["| " + " | ".join(row) + " |" for row in clean[1:]]
    return out + [""]


# ---------------------------------------------------------------- HTML


def _html(path: Path, doc_id: str) -> list[LoadedDoc]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(read_utf8(path), "lxml")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    lines: list[str] = []
    body = soup.body or soup
    for el in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "table", "pre"]):
        if el.find_parent("table") is not None or (el.name != "table" and el.find_parent(["li", "p"]) is not None):
            continue  # counted with the table / list item that holds it
        if el.name == "table":
            lines.extend(
                _table_lines(
                    [[c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])] for tr in el.find_all("tr")]
                )
            )
            continue
        text = " ".join(el.get_text(" ", strip=True).split())
        if text:
            lines.append(f"{'#' * int(el.name[1])} {text}" if el.name[0] == "h" and el.name[1:].isdigit() else text)
    return [LoadedDoc(doc_id, title or _first_line("\n".join(lines)) or path.stem, [Block("\n".join(lines))])]


# ---------------------------------------------------------------- HWPX (OWPML: zipped XML)

_HP = "{http://www.hancom.co.kr/hwpml/2011/paragraph}"


def _hwpx(path: Path, doc_id: str) -> list[LoadedDoc]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        sections = sorted(
            (n for n in names if re.fullmatch(r"Contents/section\d+\.xml", n)),
            key=lambda n: int(re.findall(r"\d+", n)[-1]),
        )
        if not sections:
            raise LoaderError(
                f"{path}: no Contents/section*.xml inside; "
                "not an HWPX document (an old binary .hwp must be saved as HWPX)"
            )
        title = ""
        if "Contents/content.hpf" in names:
            hpf = ElementTree.fromstring(z.read("Contents/content.hpf"))
            title = next((el.text or "" for el in hpf.iter() if el.tag.endswith("title")), "").strip()
        lines: list[str] = []
        for name in sections:
            _hwpx_lines(ElementTree.fromstring(z.read(name)), lines)
    return [LoadedDoc(doc_id, title or _first_line("\n".join(lines)) or path.stem, [Block("\n".join(lines))])]


def _hwpx_lines(element: ElementTree.Element, lines: list[str]) -> None:
    for child in element:
        if child.tag == f"{_HP}p":
            tables = [t for t in child.iter(f"{_HP}tbl")]
            text = "".join(t.text or "" for t in child.iter(f"{_HP}t") if not _inside(t, tables)).strip()
            if text:
                lines.append(text)
            for tbl in tables:
                rows = [
                    [" ".join("".join(t.text or "" for t in tc.iter(f"{_HP}t")).split()) for tc in tr.iter(f"{_HP}tc")]
                    for tr in tbl.iter(f"{_HP}tr")
                ]
                lines.extend(_table_lines(rows))
        else:
            _hwpx_lines(child, lines)


def _inside(node: ElementTree.Element, tables: list[ElementTree.Element]) -> bool:
    # ElementTree has no parent links; tables are few and small, so a membership scan is fine.
    return any(node is el for t in tables for el in t.iter())


_READERS = {
    ".md": _markdown,
    ".markdown": _markdown,
    ".txt": _plain_text,
    ".jsonl": _jsonl,
    ".pdf": _pdf,
    ".docx": _docx,
    ".html": _html,
    ".htm": _html,
    ".hwpx": _hwpx,
}
