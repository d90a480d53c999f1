"""Runs inside the axolotl env (not the kofin env): it imports axolotl, never kofin.

Run as:
    <axolotl-env>/bin/python axolotl_entry.py validate axolotl.yaml   # axolotl's own schema, no weights
    <launcher> axolotl_entry.py train axolotl.yaml                    # `-m axolotl.cli.train`, CPU-safe

`validate` prints one JSON line: {"ok": true} or {"ok": false, "error": "..."}.

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


def validate(path: str) -> int:
    import yaml
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    try:
        validate_config(DictDefault(raw))
    except Exception as err:  # axolotl raises ValueError, pydantic ValidationError, AssertionError...
        print(json.dumps({"ok": False, "error": f"{type(err).__name__}: {err}"}, ensure_ascii=False))
        return 1
    print(json.dumps({"ok": True}))
    return 0


def train() -> None:
    import torch
    import axolotl.cli.config as cli_config
    import axolotl.utils.config as config

    original = config.normalize_config

    def normalize_config_cpu(cfg):
        original(cfg)
        if not torch.accelerator.is_available():
            cfg.device_map = None

    config.normalize_config = normalize_config_cpu
    cli_config.normalize_config = normalize_config_cpu  # imported there by name
    runpy.run_module("axolotl.cli.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("validate", "train"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "validate":
        sys.exit(validate(sys.argv[2]))
    sys.argv = [sys.argv[0], sys.argv[2]]
    train()
