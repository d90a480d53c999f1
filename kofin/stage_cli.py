"""What every stage's command line shares: `--config`, `key.path=value` overrides, and errors.

A stage's CLI is a few lines: build the parser from its config model (so `--help` lists every
config key with its default and description, written once on the model), load the config, call
`main(cfg)`. User-facing errors print as one clear message and exit 1; config errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from kofin.config import ConfigError, describe_fields, load_config
from kofin.errors import KofinError

C = TypeVar("C", bound=BaseModel)


def literal_choices(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    """key path -> allowed values, from every Literal in the config model's annotations."""
    import typing

    def walk(tp: Any) -> Iterator[Any]:
        if typing.get_origin(tp) is typing.Literal:
            yield from typing.get_args(tp)
        for arg in typing.get_args(tp) if typing.get_origin(tp) is not typing.Literal else ():
            yield from walk(arg)

    out: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        values = [str(v) for v in walk(field.annotation)]
        if values:
            out[key] = values
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out.update(literal_choices(arg, key + "."))
    return out


def config_help(model: type[BaseModel]) -> str:
    """Every config key with its meaning and default, and the allowed values of a Literal key
    (generated from the model, never retyped)."""
    rows = describe_fields(model)
    choices = literal_choices(model)
    width = min(max(len(k) for k, _, _ in rows) + 2, 38)
    out = ["config keys (YAML, or key.path=value on the command line):"]
    for key, default, desc in rows:
        text = desc + (f" [default: {default}]" if default else "")
        wrapped = textwrap.wrap(text, 100 - width) or [""]
        out.append(f"  {key:<{width}}{wrapped[0]}")
        out.extend(f"  {'':<{width}}{w}" for w in wrapped[1:])
        if key in choices:
            out.append(f"  {'':<{width}}one of: " + " | ".join(choices[key]))
    return "\n".join(out)


def add_config_args(parser: argparse.ArgumentParser, model: type[BaseModel], example: str, override: str) -> None:
    """`--config` and KEY=VALUE overrides; `override` is an example of this stage's own keys."""
    parser.add_argument("--config", type=Path, metavar="YAML", help=f"stage config, e.g. {example}")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"override a config key, e.g. {override}")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = config_help(model)


def load_stage_config(model: type[C], args: argparse.Namespace, prog: str, overrides: list[str] | None = None) -> C:
    """The config from `--config` plus overrides (`args.overrides` unless given); exit 2 on a problem."""
    try:
        return load_config(model, args.config, args.overrides if overrides is None else overrides)
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def add_key_flags(parser: argparse.ArgumentParser, model: type[BaseModel], flags: dict[str, str]) -> None:
    """Shortcut flags for config keys (`--top-k` for retrieval.top_k): each flag's help and choices
    come from the key's own field, so the flag and the YAML key cannot drift apart."""
    described = {key: (default, desc) for key, default, desc in describe_fields(model)}
    choices = literal_choices(model)
    for flag, key in flags.items():
        default, desc = described[key]  # a KeyError here is a typo in the flag table
        parser.add_argument(
            flag,
            dest=_flag_dest(flag),
            metavar=key.rsplit(".", 1)[-1].upper(),
            choices=choices.get(key),
            help=f"{desc.rstrip('.')} (config key {key}"
            + (f", default {default})" if default not in ("", "None", "required") else ")"),
        )


def key_flag_overrides(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    """`key=value` for every shortcut flag given on the command line."""
    return [
        f"{key}={getattr(args, _flag_dest(flag))}"
        for flag, key in flags.items()
        if getattr(args, _flag_dest(flag)) is not None
    ]


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def run_reporting_errors(prog: str, fn: Callable[[], Any]) -> int:
    """Call `fn`; a KofinError becomes `prog: message` on stderr and exit code 1."""
    try:
        fn()
    except ConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except KofinError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was moved into place (partial work stays in *.partial)", file=sys.stderr)
        return 130
    return 0
