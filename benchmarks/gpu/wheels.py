"""Wheels carried to a GPU host that has torch, transformers, PEFT and accelerate but nothing else of
the DPO stage: what `benchmarks/gpu_check.sh prepare` downloads, trimmed to fit the 64 MiB a device
run may carry.

Run as:
    python benchmarks/gpu/wheels.py download DIR       # pip download --no-deps of CARRIED at the lock's versions
    python benchmarks/gpu/wheels.py trim-bnb WHEEL     # keep only bitsandbytes' CUDA 13 (and CPU) library
    python benchmarks/gpu/wheels.py size DIR           # total MiB; exit 1 above the limit
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "training" / "unsloth-requirements.txt"
LIMIT_MIB = 64
# The unsloth env's packages a stock torch/transformers/peft/accelerate host lacks, at the lock's pins.
CARRIED = (
    "unsloth",
    "unsloth_zoo",
    "trl",
    "bitsandbytes",
    "torchao",
    "cut_cross_entropy",
    "tyro",
    "msgspec",
    "docstring_parser",
    "typeguard",
    "shellingham",
    "hf_transfer",
)
# bitsandbytes ships one native library per CUDA version; the H200 host runs CUDA 13.
KEEP_NATIVE = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\b")


def lock_versions() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[name.lower().replace("-", "_")] = version
    return out


def download(dest: Path) -> list[Path]:
    pins = lock_versions()
    missing = [n for n in CARRIED if n not in pins]
    if missing:
        raise SystemExit(f"{LOCK} pins none of {missing}; update CARRIED in {__file__}")
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{n}=={pins[n]}" for n in CARRIED]
    # The GPU host's python is 3.12 on glibc >= 2.28; pip matches --platform tags literally, so name each.
    platforms = [
        arg
        for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_24", "manylinux_2_17", "manylinux2014")
        for arg in ("--platform", f"{tag}_x86_64")
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--python-version",
            "3.12",
            *platforms,
            "-d",
            str(dest),
            *specs,
        ],
        check=True,
    )
    return sorted(dest.glob("*.whl"))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim_native_libraries(wheel: Path, keep: re.Pattern[str] = KEEP_NATIVE) -> list[str]:
    """Rewrite `wheel` without the native libraries `keep` does not match; RECORD follows. Returns what was dropped."""
    with zipfile.ZipFile(wheel) as zin:
        names = zin.namelist()
        dropped = [n for n in names if n.endswith(".so") and "libbitsandbytes" in n and not keep.search(n)]
        if not dropped:
            return []
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        tmp = wheel.with_name(wheel.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            lines = []
            for name in names:
                if name in dropped or name == record:
                    continue
                data = zin.read(name)
                zout.writestr(zin.getinfo(name), data)
                lines.append(_record_line(name, data))
            zout.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
    tmp.replace(wheel)
    return dropped


def total_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("download", "trim-bnb", "size"):
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(argv[2])
    if argv[1] == "download":
        for wheel in download(target):
            print(wheel.name)
    elif argv[1] == "trim-bnb":
        for name in trim_native_libraries(target):
            print(f"dropped {name}")
    else:
        mib = total_mib(target)
        print(f"{mib:.1f} MiB in {target} (limit {LIMIT_MIB} MiB)")
        return 0 if mib <= LIMIT_MIB else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
