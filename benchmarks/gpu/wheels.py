"""Wheels carried to a GPU host that has torch, transformers, PEFT and accelerate but nothing else of
the DPO stage: what `benchmarks/gpu_check.sh prepare` downloads, trimmed to fit the 64 MiB a device
run may carry.

Run as:
    python benchmarks/gpu/wheels.py download DIR       # pip download --no-deps of CARRIED at the lock's versions
    python benchmarks/gpu/wheels.py trim-bnb WHEEL     # keep only bitsandbytes' CUDA 13 (and CPU) library
    python benchmarks/gpu/wheels.py size DIR           # total MiB; exit 1 above the limit
    python benchmarks/gpu/wheels.py needs DIR          # what neither the H200 image nor DIR holds; exit 1 if any
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
HOST_PACKAGES = Path(__file__).with_name("h200-packages.txt")
# Declared by unsloth 2026.10.9 but imported on its training path only inside try/except (read in its
# wheel): xformers (attention falls back to SDPA), nest_asyncio (OpenEnv); pydantic, structlog and json5
# serve its CLI and studio; diffusers is only named in a list. Carrying them would cost ~100 MiB.
NOT_NEEDED_FOR_TRAINING = {"xformers", "nest-asyncio", "pydantic", "structlog", "json5", "diffusers"}
# The GPU host's interpreter, for evaluating the carried wheels' environment markers.
HOST_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
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
    # TRL and unsloth import datasets; the H200 image has pyarrow, xxhash and pandas but not these three
    "datasets",
    "dill",
    "multiprocess",
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


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """The wheel's distribution name and its Requires-Dist lines, read from its METADATA."""
    from email.parser import HeaderParser

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(z.read(meta).decode("utf-8"))  # the headers, not the description
    return str(headers["Name"]), [str(r) for r in headers.get_all("Requires-Dist") or []]


def unmet_requirements(folder: Path, host: set[str]) -> dict[str, list[str]]:
    """Per carried wheel, the requirements that apply on the GPU host (markers evaluated for it, extras
    left out) and that neither the host's packages nor another carried wheel provide. An unmet one is
    an ImportError on the device, found only after a lease has started; here it costs nothing."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as canonical

    wheels = {w: wheel_requirements(w) for w in sorted(folder.glob("*.whl"))}
    have = {canonical(n) for n in host} | {canonical(name) for name, _ in wheels.values()}
    unmet: dict[str, list[str]] = {}
    for name, requires in wheels.values():
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**HOST_MARKERS, "extra": ""}):
                continue
            if canonical(req.name) not in have and canonical(req.name) not in NOT_NEEDED_FOR_TRAINING:
                unmet.setdefault(name, []).append(str(req))
    return unmet


def host_packages(path: Path = HOST_PACKAGES) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def total_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("download", "trim-bnb", "size", "needs"):
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(argv[2])
    if argv[1] == "download":
        for wheel in download(target):
            print(wheel.name)
    elif argv[1] == "trim-bnb":
        for name in trim_native_libraries(target):
            print(f"dropped {name}")
    elif argv[1] == "needs":
        unmet = unmet_requirements(target, host_packages())
        for name, reqs in unmet.items():
            print(f"{name} needs {', '.join(reqs)}: not in {HOST_PACKAGES.name} nor carried; add it to CARRIED")
        if not unmet:
            # the image's list has names only: a version the image holds is not checked here
            print(f"every requirement of the wheels in {target} is, by name, on the H200 image or carried")
        return 1 if unmet else 0
    else:
        mib = total_mib(target)
        print(f"{mib:.1f} MiB in {target} (limit {LIMIT_MIB} MiB)")
        return 0 if mib <= LIMIT_MIB else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
