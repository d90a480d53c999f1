"""A pipeline step's `matrix:`: the config keys a study sweeps, expanded into one arm per combination.

Run as: a library; `kofin.pipeline` expands every step through `arms(...)` before planning.

    - stage: sft
      config: ../sft/tiny.yaml
      matrix:
        method: [lora, qlora, dora, rslora]
        lora.r: [8, 64]

runs eight arms, `sft-lora-r8`, `sft-lora-r64`, ... `sft-rslora-r64`, each its own step with its own
run directory: the stage config's `output_dir` with the same suffix (`runs/sft-tiny-lora-r8`).
Matrix keys are the step's own config keys, as in `set:` (no step prefix). An arm is named from
its values: a text value as it is (`qlora`), any other value after the last part of its key
(`r8`, `seed1`), so the name says what the arm is; characters a step name cannot hold (`.` would
split an override `STEP.key=value`) become `_`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from kofin.config import _model_at

# Keys an arm must not sweep: the arm's run directory is derived, never chosen per arm.
FIXED_KEYS = ("output_dir",)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_+-]+")


@dataclass(frozen=True)
class Arm:
    """One combination of a step's matrix (the whole step when it has no matrix)."""

    label: str  # the step's name for runs, --force, overrides and the study table
    values: dict[str, Any] = field(default_factory=dict)  # {key.path: value} this arm sets
    suffix: str = ""  # appended to the stage config's output_dir ("" = the step's own directory)


def check_matrix(model: type[BaseModel], matrix: dict[str, list[Any]], step: str) -> list[str]:
    """Every problem of a step's matrix, each naming the bad key and the fix."""
    problems = []
    for key, values in matrix.items():
        keys = tuple(key.split("."))
        if key in FIXED_KEYS:
            problems.append(
                f"step '{step}': matrix key '{key}' cannot be swept: each arm's run directory is "
                f"<output_dir>-<arm values>; set output_dir once under `set:`"
            )
            continue
        holder = _model_at(model, keys[:-1])
        if holder is None or keys[-1] not in holder.model_fields:
            known = ", ".join(sorted(holder.model_fields)) if holder is not None else ", ".join(model.model_fields)
            problems.append(
                f"step '{step}': matrix key '{key}' is no config key of {model.__name__}; "
                f"keys there are {known} (matrix keys are written as in `set:`, e.g. lora.r)"
            )
        if not isinstance(values, list) or not values:
            problems.append(f"step '{step}': matrix key '{key}' needs a non-empty list of values, e.g. [8, 64]")
        elif len({repr(v) for v in values}) != len(values):
            problems.append(f"step '{step}': matrix key '{key}' lists a value twice: {values}")
    return problems


def value_part(key: str, value: Any) -> str:
    """How one value shows in an arm's name: `qlora`, `r8`, `seed1`."""
    text = value if isinstance(value, str) else f"{key.rsplit('.', 1)[-1]}{value}"
    return _NAME_UNSAFE.sub("_", str(text)).strip("_") or "x"


def arms(label: str, matrix: dict[str, list[Any]]) -> list[Arm]:
    """The step's arms in matrix order (first key slowest); one plain arm without a matrix."""
    if not matrix:
        return [Arm(label)]
    keys = list(matrix)
    out = []
    for combo in itertools.product(*(matrix[k] for k in keys)):
        suffix = "-".join(value_part(k, v) for k, v in zip(keys, combo, strict=True))
        out.append(Arm(f"{label}-{suffix}", dict(zip(keys, combo, strict=True)), suffix))
    return out
