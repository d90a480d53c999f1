"""Peak memory of each phase of a merge, to show it runs out of core.

Run as part of:
    kofin merge --config configs/merge/tiny.yaml

Two numbers per phase, because mergekit reads safetensors through mmap: `peak_rss_mb` (Linux
VmHWM, reset at the start of each phase) counts the model-file pages mergekit touched, which the
kernel can drop again under memory pressure; `peak_anon_mb` (RssAnon, sampled every 5 ms, so a
spike shorter than that can be missed) is the private memory that must fit in RAM. A merge that
loaded both models into memory would raise the second by their full size; an out-of-core merge
raises it by a few tensors.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SAMPLE_S = 0.005


def proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    # Linux: writing 5 to clear_refs resets VmHWM, so each phase gets its own peak.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def phase(record: dict[str, Any], name: str) -> Iterator[None]:
    """Time the block and record its peak RSS and sampled peak anonymous memory under record[name]."""
    gc.collect()
    resettable = _reset_peak_rss()
    start = {"rss": proc_status_mb("VmRSS"), "anon": proc_status_mb("RssAnon")}
    peak_anon = [start["anon"] or 0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            peak_anon[0] = max(peak_anon[0], proc_status_mb("RssAnon") or 0.0)

    sampler = threading.Thread(target=sample, name=f"kofin-rss-{name}", daemon=True)
    sampler.start()
    started = time.time()
    try:
        yield
    finally:
        done.set()
        sampler.join()
        peak_anon[0] = max(peak_anon[0], proc_status_mb("RssAnon") or 0.0)
        record[name] = {
            "wall_s": round(time.time() - started, 3),
            "rss_start_mb": start["rss"],
            "peak_rss_mb": proc_status_mb("VmHWM") if resettable else None,
            "anon_start_mb": start["anon"],
            "peak_anon_mb": peak_anon[0] if start["anon"] is not None else None,
        }
