"""What kofin logs about questions and answers, with personal data masked first.

Run as: a library; `kofin ask` appends one JSON line per question to the audit log and routes
kofin's `logging` records through `PiiMaskingFilter`.

Bank staff paste customers' resident numbers, phones, cards and accounts into questions; none of
that may reach a log. Masking uses kofin.data_ko.pii (the same scrubber as the training data).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from kofin.data_ko.pii import scrub_pii

_lock = threading.Lock()


def mask(text: str) -> str:
    return scrub_pii(text)[0]


class PiiMaskingFilter(logging.Filter):
    """Masks PII in a record's message (arguments included) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = mask(message), None
        return True


def install_log_masking(logger_name: str = "kofin") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, PiiMaskingFilter) for f in logger.filters):
        logger.addFilter(PiiMaskingFilter())
    for handler in logging.getLogger().handlers:  # handlers see records of every logger
        if not any(isinstance(f, PiiMaskingFilter) for f in handler.filters):
            handler.addFilter(PiiMaskingFilter())


def default_audit_log() -> Path:
    home = Path(os.environ.get("KOFIN_HOME") or Path.home() / ".cache" / "kofin")
    return home / "logs" / "ask.jsonl"


def write_audit(path: Path, record: dict[str, Any]) -> None:
    """Append one masked JSON line: question, answer and flagged sentences are scrubbed."""
    clean = dict(record)
    for key in ("question", "answer"):
        if isinstance(clean.get(key), str):
            clean[key] = mask(clean[key])
    if clean.get("flagged"):
        clean["flagged"] = [dict(f, sentence=mask(f["sentence"])) for f in clean["flagged"]]
    clean["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(clean, ensure_ascii=False) + "\n"
    with _lock, open(path, "a", encoding="utf-8") as f:  # one write per line: lines never interleave
        f.write(line)
