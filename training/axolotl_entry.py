"""Runs inside the axolotl env (not the kofin env): it imports axolotl, never kofin.

Run as:
    <axolotl-env>/bin/python axolotl_entry.py validate a.yaml [b.yaml ...]  # axolotl's schema, no weights
    <launcher> axolotl_entry.py train axolotl.yaml                    # `-m axolotl.cli.train`, CPU-safe

`validate` prints one JSON line per file: {"path", "ok": true, "missing": [packages the config
needs that this env lacks]} or {"path", "ok": false, "error": "..."}.

`train` is `python -m axolotl.cli.train` with one fix for hosts without an accelerator:
axolotl's normalize_config pins `device_map={"": LOCAL_RANK}` whenever WORLD_SIZE > 1, and an
integer device means "accelerator #LOCAL_RANK", which does not exist on a CPU host. kofin uses
this entry only for multi-process runs on CPU (with ACCELERATE_USE_CPU=1, which makes the HF
Trainer build a gloo process group); on GPU hosts the launcher runs axolotl's module directly.
"""

from __future__ import annotations

import json
import runpy
import sys


def _names(model) -> set[str]:
    names = set(model.model_fields)
    for field in model.model_fields.values():
        alias = field.validation_alias or field.alias
        choices = getattr(alias, "choices", [alias])
        names.update(c for c in choices if isinstance(c, str))
    return names


# Packages axolotl imports only when a key asks for them; they are extras, absent from the
# CPU lock, so a missing one must be named before GPUs are booked: an attn_implementation's
# package here, and the deepspeed package for a `deepspeed:` key.
ATTN_PACKAGES = {"flash_attention_2": "flash_attn"}


def check(raw: dict) -> dict:
    from importlib.util import find_spec

    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.config import AxolotlInputConfig
    from axolotl.utils.schemas.datasets import SFTDataset

    # axolotl's schema ignores keys it does not know; a misspelled key would silently do nothing.
    unknown = sorted(set(raw) - _names(AxolotlInputConfig))
    for i, ds in enumerate(raw.get("datasets") or []):
        unknown += [f"datasets.{i}.{k}" for k in sorted(set(ds) - _names(SFTDataset))]
    if unknown:
        return {"ok": False, "error": f"keys axolotl does not know: {', '.join(unknown)}"}
    try:
        validate_config(DictDefault(raw))
    except Exception as err:  # axolotl raises ValueError, pydantic ValidationError, AssertionError...
        return {"ok": False, "error": f"{type(err).__name__}: {err}"}
    missing = []
    impl = raw.get("attn_implementation")
    attn = ATTN_PACKAGES.get(impl) if isinstance(impl, str) else None
    if attn and find_spec(attn) is None:
        missing.append(f"attn_implementation {raw['attn_implementation']} needs the {attn} package")
    if raw.get("deepspeed") and find_spec("deepspeed") is None:
        missing.append("deepspeed needs the deepspeed package")
    return {"ok": True, "missing": missing}


def validate(paths: list[str]) -> int:
    import yaml

    worst = 0
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            result = check(yaml.safe_load(fh))
        print(json.dumps({"path": path, **result}, ensure_ascii=False), flush=True)
        worst = max(worst, 0 if result["ok"] else 1)
    return worst


def train() -> None:
    import axolotl.cli.config as cli_config
    import axolotl.utils.config as config
    import torch

    original = config.normalize_config

    def normalize_config_cpu(cfg):
        original(cfg)
        if not torch.accelerator.is_available():
            cfg.device_map = None

    config.normalize_config = normalize_config_cpu
    cli_config.normalize_config = normalize_config_cpu  # imported there by name
    runpy.run_module("axolotl.cli.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("validate", "train"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "validate":
        sys.exit(validate(sys.argv[2:]))
    sys.argv = [sys.argv[0], sys.argv[2]]
    train()
