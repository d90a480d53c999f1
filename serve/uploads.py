"""Admin uploads into a knowledge base: safe names, type and size limits, access groups, ingest.

Run as: a library; the chat's admin tab (serve/app.py) calls `save_upload` then `ingest_uploads`.

Uploaded files live in the KB's upload folder (`uploads.dir`, beside the KB folder: ingest
replaces the KB folder as a whole, so files kept inside it would vanish). Their access groups are
kept in `access.json` there and reach ingest as `access` rules, so a PDF or DOCX (which carry no
front matter) gets the groups the admin chose, and a Markdown file's own front matter cannot widen
them. A file name is used only after it passed every check: no path parts, no `..`, no hidden or
odd characters, a known suffix whose bytes look like that format, and the size limit. The file is
written to a temporary name in the folder and renamed, so a half-written upload is never ingested.

Several replicas (a PostgreSQL store, kofin.serve.store_pg) keep the upload records and bytes in
the store: `save_upload` writes them there too, and `recorded_uploads` (what a re-index ingests)
first brings this replica's folder up to date with the store, so an upload made on one replica is
in the next re-index of every other.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
from contextlib import contextmanager
from pathlib import Path

from kofin.errors import KofinError

ACCESS_FILE = "access.json"
_SAFE = re.compile(r"^[\w][\w .()\-]{0,118}$")  # \w includes Hangul; no '/', '\\', ':' or control characters
_ZIP = b"PK\x03\x04"
_MAGIC = {".pdf": (b"%PDF-",), ".docx": (_ZIP,), ".hwpx": (_ZIP,)}
_TEXT = {".md", ".markdown", ".txt", ".html", ".htm", ".jsonl"}


_SHARED: dict[Path, object] = {}  # upload folder -> the store that holds the records (replicas)


def share_uploads(folder: Path, store) -> None:
    """Keep the records of `folder` in `store` too (kofin serve with a PostgreSQL store)."""
    _SHARED[Path(folder).resolve()] = store


class UploadRejected(KofinError):
    """An upload that was refused; the message is shown to the admin (Korean) and says why."""


def safe_filename(name: str, allowed_suffixes: list[str]) -> str:
    """`name` if it is a plain, safe file name with an allowed suffix; otherwise UploadRejected."""
    name = unicodedata.normalize("NFC", name or "")
    if not name.strip():
        raise UploadRejected("파일 이름이 없습니다.")
    if "/" in name or "\\" in name or "\x00" in name or Path(name).is_absolute() or ".." in name:
        raise UploadRejected(f"파일 이름에 경로가 들어 있습니다: {name!r} (경로 없이 파일 이름만 허용됩니다)")
    if not _SAFE.match(name) or name.endswith((" ", ".")):
        raise UploadRejected(
            f"파일 이름에 쓸 수 없는 문자가 있습니다: {name!r} (한글·영문·숫자·공백·. _ - ( ) 만 허용, 120자 이내)"
        )
    suffix = Path(name).suffix.lower()
    if suffix not in allowed_suffixes:
        raise UploadRejected(
            f"허용되지 않는 파일 형식입니다: {suffix or '(확장자 없음)'} (허용: {', '.join(allowed_suffixes)})"
        )
    return name


def check_content(src: Path, suffix: str, max_file_mb: float) -> None:
    size = src.stat().st_size
    if size == 0:
        raise UploadRejected("빈 파일입니다.")
    if size > max_file_mb * 1024 * 1024:
        raise UploadRejected(f"파일이 너무 큽니다: {size / 2**20:.2f} MB (최대 {max_file_mb:g} MB)")
    with open(src, "rb") as f:
        head = f.read(8)
    if suffix in _MAGIC and not head.startswith(_MAGIC[suffix]):
        raise UploadRejected(f"파일 내용이 {suffix} 형식이 아닙니다 (확장자만 바꾼 파일은 받지 않습니다)")
    if suffix in (".docx", ".hwpx"):
        from kofin.serve.loaders import LoaderError, check_unzipped_size

        try:
            check_unzipped_size(src)
        except LoaderError:
            raise UploadRejected("압축을 풀면 지나치게 커지는 파일입니다 (zip bomb 의심). 받지 않습니다.") from None
    if suffix in _TEXT:
        try:
            src.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UploadRejected(f"{suffix} 파일은 UTF-8 텍스트여야 합니다") from None


@contextmanager
def _locked(folder: Path):
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_access(folder: Path) -> dict[str, list[str]]:
    path = Path(folder) / ACCESS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_upload(
    src: Path, name: str, groups: list[str], folder: Path, allowed_suffixes: list[str], max_file_mb: float
) -> Path:
    """Copy an uploaded file into `folder` under its checked name; record its groups. Returns the path."""
    groups = sorted({g.strip() for g in groups if g and g.strip()})
    if not groups:
        raise UploadRejected("열람 그룹을 하나 이상 고르세요 (모두에게 공개하려면 all).")
    safe = safe_filename(name, allowed_suffixes)
    check_content(Path(src), Path(safe).suffix.lower(), max_file_mb)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe
    if target.parent != folder:  # belt and braces: the name checks above already rule this out
        raise UploadRejected(f"파일 이름이 업로드 폴더 밖을 가리킵니다: {name!r}")
    with _locked(folder):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out)
            os.replace(tmp, target)  # replaces a symlink itself, never writes through it
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _record(folder, {safe: groups})
        store = _SHARED.get(folder)
        if store is not None:
            content = target.read_bytes()
            store.put_upload(safe, groups, content, hashlib.sha256(content).hexdigest(), time.time())  # type: ignore[attr-defined]
    return target


def _record(folder: Path, groups_by_name: dict[str, list[str]]) -> None:
    """Add entries to access.json (temp file + rename; the caller holds the folder's lock)."""
    access = read_access(folder)
    access.update(groups_by_name)
    tmp_access = folder / f".{ACCESS_FILE}.tmp"
    tmp_access.write_text(json.dumps(access, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp_access, folder / ACCESS_FILE)


def sync_from_store(folder: Path, store) -> list[str]:
    """Write the store's uploads this folder lacks (or holds other bytes of); returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    fetched: list[str] = []
    with _locked(folder):
        access = read_access(folder)
        for name, (groups, sha) in sorted(store.upload_records().items()):
            target = folder / name
            if name != Path(name).name or name.startswith("."):
                continue  # only names save_upload accepted ever reach the store; never write outside the folder
            same = (
                target.is_file() and not target.is_symlink() and hashlib.sha256(target.read_bytes()).hexdigest() == sha
            )
            if same and access.get(name) == groups:
                continue
            if not same:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
                with os.fdopen(fd, "wb") as out:
                    out.write(store.upload_content(name))
                os.replace(tmp, target)
            _record(folder, {name: groups})
            fetched.append(name)
    return fetched


def recorded_uploads(folder: Path) -> list[Path]:
    """The uploaded files that have their groups recorded (and still exist): what the chat ingests
    (with a shared store, after bringing the folder up to date with it)."""
    folder = Path(folder).resolve()
    store = _SHARED.get(folder)
    if store is not None:
        sync_from_store(folder, store)
    return [folder / name for name in sorted(read_access(folder)) if (folder / name).is_file()]


def uploaded_files(folder: Path, allowed_suffixes: list[str]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in allowed_suffixes
    )
