"""Step 2 of the merge stage: the mergekit YAML kofin writes, and mergekit's own API running it.

Run as part of:
    kofin merge --config configs/merge/tiny.yaml

The YAML is what `mergekit-yaml` reads, saved in the run directory with the exact command
(`reproduce.sh`) that rebuilds the same weights from it. Every model path in it is absolute:
mergekit's model-card writer asks the Hugging Face hub about any path that does not start with
"/" or "~", which hangs or fails in an air-gapped bank.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.merge.config import TASK_VECTOR_METHODS, MergeConfig

MERGEKIT_YAML = "mergekit.yaml"
REPRODUCE = "reproduce.sh"


class MergekitError(KofinError):
    """mergekit refused the merge or failed while running it."""


def shard_params(spec: str) -> int:
    """mergekit's size notation (5B, 500M, 1.5K, 1000) as a number of parameters."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMB]?)", spec)
    if not m:
        raise MergekitError(f"options.out_shard_size: {spec!r} is not a size like 5B or 500M")
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[m.group(2)])


def mergekit_config(
    cfg: MergeConfig, *, tuned: Path, base: Path, others: list[Path], chat_template: str | None
) -> dict[str, Any]:
    """The mergekit YAML as a dict: which models, which base, which parameters."""
    for p in (tuned, base, *others):
        if not Path(p).is_absolute():  # the config layer resolves paths; a relative one here is a bug
            raise MergekitError(f"internal: mergekit would get a relative path {p} and query the hub")

    def entry(path: Path, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": str(path), **({"parameters": params} if params else {})}

    def plain(params: dict[str, Any]) -> dict[str, Any]:
        return {k: _plain(v) for k, v in params.items()}

    models = [entry(tuned, plain(cfg.tuned_parameters))]
    models += [entry(p, plain(m.parameters)) for p, m in zip(others, cfg.models, strict=True)]
    out: dict[str, Any] = {"merge_method": cfg.method}
    if cfg.method == "slerp":
        out["base_model"] = str(tuned)  # t=0 is the tuned model
    elif cfg.method in TASK_VECTOR_METHODS:
        out["base_model"] = str(base)  # task vectors are differences from the pre-trained model
    out["models"] = models
    if cfg.parameters:
        out["parameters"] = plain(cfg.parameters)
    out["dtype"] = cfg.dtype
    if cfg.tokenizer_source is not None:
        out["tokenizer_source"] = str(cfg.tokenizer_model) if cfg.tokenizer_source == "model" else cfg.tokenizer_source
    if chat_template:
        out["chat_template"] = chat_template  # the tuned model's Human:/Assistant: template
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "model_dump"):
        return {k: v for k, v in value.model_dump().items() if v is not None}
    return value


def merge_options(cfg: MergeConfig):
    import torch
    from mergekit.options import MergeOptions

    device = cfg.options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return MergeOptions(
        lazy_unpickle=cfg.options.lazy_unpickle,
        low_cpu_memory=cfg.options.low_cpu_memory,
        device=device,
        out_shard_size=shard_params(cfg.options.out_shard_size),
        random_seed=cfg.options.random_seed,
        copy_tokenizer=True,
        allow_crimes=False,
        trust_remote_code=False,
        safe_serialization=True,
        write_model_card=True,
        quiet=True,
    )


def reproduce_command(cfg: MergeConfig, yaml_path: Path, out: str = "OUT") -> str:
    """The mergekit-yaml command line that rebuilds the merged weights from the saved YAML."""
    args = [
        "mergekit-yaml",
        str(yaml_path),
        out,
        "--random-seed",
        str(cfg.options.random_seed),
        "--out-shard-size",
        cfg.options.out_shard_size,
        "--lazy-unpickle" if cfg.options.lazy_unpickle else "--no-lazy-unpickle",
    ]
    return " ".join(shlex.quote(a) for a in args)


def validate(config: dict[str, Any], cfg: MergeConfig):
    """mergekit's own validation of the generated config, and its options; reads no tensor."""
    from mergekit.config import MergeConfiguration

    try:
        return MergeConfiguration.model_validate(config), merge_options(cfg)
    except Exception as err:  # mergekit raises pydantic errors and plain RuntimeErrors for bad configs
        raise MergekitError(f"mergekit rejected the generated config ({cfg.method}): {err}") from err


def run_mergekit(merge_config, options, yaml_text: str, out: Path, method: str) -> None:
    from mergekit.merge import run_merge

    try:
        run_merge(merge_config, str(out), options=options, config_source=yaml_text)
    except (RuntimeError, ValueError) as err:
        raise MergekitError(f"mergekit failed ({method}): {err}") from err
