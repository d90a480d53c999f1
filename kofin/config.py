"""Typed stage configs: YAML file < `a.b=value` overrides, validated at load, every problem at once.

Each stage declares a pydantic model (extra keys forbidden) beside the code it configures; this
module loads it. Problems come back together, each with the file:line, the key path and the fix:

    kofin: 2 problems in configs/sft/bad.yaml
      bad.yaml:7  lora.r: must be > 0 (got 0)
      bad.yaml:9  lora.alhpa: unknown key; did you mean 'alpha'?

Relative paths in a YAML file resolve against that file's folder; relative paths given as CLI
overrides resolve against the current directory, as a shell user expects.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo

from kofin.errors import KofinError

__all__ = [
    "ConfigError",
    "KofinModel",
    "StageConfig",
    "ResolvedPath",
    "load_config",
    "config_to_dict",
    "describe_fields",
]

C = TypeVar("C", bound=BaseModel)


class ConfigError(KofinError, ValueError):
    """A config that cannot be used. `problems` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{len(problems)} {noun} in {source}"] + [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


def _resolve_against_base(value: Path, info: ValidationInfo) -> Path:
    # The loader passes the YAML file's folder as context; models built in code get cwd.
    base = (info.context or {}).get("base_dir") if info.context else None
    value = value.expanduser()
    if not value.is_absolute():
        value = Path(base or Path.cwd()) / value
    return Path(_normpath(value))


def _normpath(p: Path) -> str:
    import os.path

    return os.path.normpath(str(p))


# A path that is absolute after validation. Tools such as mergekit misbehave on relative paths
# (its model-card writer queries the hub), so nothing relative ever leaves the config layer.
ResolvedPath = Annotated[Path, AfterValidator(_resolve_against_base)]


class KofinModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())
    # Where load_config read each key (file name, key path -> line, keys set on the command line),
    # so a stage that finds a problem only when it runs can still name the file and line.
    _origin: tuple[str, dict[tuple[str, ...], int], frozenset[tuple[str, ...]]] | None = PrivateAttr(None)


def config_location(cfg: KofinModel, key: str) -> str:
    """`file.yaml:LINE` of a key of a config load_config built, `command line` for an override,
    the file alone for a default; `config` for a model built in code."""
    if cfg._origin is None:
        return "config"
    name, lines, overridden = cfg._origin
    path = tuple(key.split("."))
    if path in overridden:
        return "command line"
    for n in range(len(path), 0, -1):  # the key's own line, else its nearest parent's
        if path[:n] in lines:
            return f"{name}:{lines[path[:n]]}"
    return name


class StageConfig(KofinModel):
    """Fields every stage config has."""

    output_dir: ResolvedPath = Field(
        description="Run directory this stage writes (artifacts, config.yaml, manifest.json, COMPLETE)."
    )


# ---------------------------------------------------------------- loading


def load_config(
    model: type[C],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    defaults: dict[str, Any] | None = None,
) -> C:
    """Build `model` from defaults < YAML file < `a.b=value` overrides; raise ConfigError."""
    data: dict[str, Any] = _deep_copy(defaults or {})
    lines: dict[tuple[str, ...], int] = {}
    source = "command line"
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        source = str(path)
        base_dir = path.resolve().parent
        file_data, lines = _read_yaml(path)
        _deep_merge(data, file_data)

    problems: list[str] = []
    override_keys: set[tuple[str, ...]] = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override '{item}': expected KEY=VALUE, e.g. lora.r=16")
            continue
        keys = tuple(key.strip().split("."))
        value = _parse_override_value(raw)
        if isinstance(value, str) and _is_path_field(model, keys):
            # Paths typed on the command line are relative to where the user stands.
            value = str((Path.cwd() / Path(value).expanduser()).resolve())
        _set_path(data, keys, value)
        override_keys.add(keys)
    if problems:
        raise ConfigError(source, problems)

    try:
        cfg = model.model_validate(data, context={"base_dir": str(base_dir)})
        if isinstance(cfg, KofinModel):
            cfg._origin = (Path(source).name if path is not None else source, lines, frozenset(override_keys))
        return cfg
    except ValidationError as err:
        file_name = Path(source).name if path is not None else None
        raise ConfigError(source, _format_errors(model, err, lines, file_name, override_keys)) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.exists():
        raise ConfigError(str(path), [f"config file not found: {path}"])
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), [_yaml_problem(path, text, err)]) from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [f"{path.name}:1  the top level must be a mapping of keys, got {type(data).__name__}"]
        )
    lines: dict[tuple[str, ...], int] = {}
    _collect_lines(node, (), lines)
    return data, lines


def _yaml_problem(path: Path, text: str, err: yaml.YAMLError) -> str:
    """`file:line  what is wrong` for a YAML syntax error, at the line where the broken construct
    starts: PyYAML notices an unclosed `[` or `{` only lines later, where parsing fails."""
    problem = getattr(err, "problem", None) or str(err)
    mark = getattr(err, "problem_mark", None)
    start = getattr(err, "context_mark", None)
    if mark is None:
        return f"{path.name}  not valid YAML: {problem}"
    if start is not None and start.line != mark.line:
        opened = text.splitlines()[start.line].strip() if start.line < len(text.splitlines()) else ""
        context = getattr(err, "context", None) or "the construct"
        return (
            f"{path.name}:{start.line + 1}  not valid YAML: {context} started here ({opened!r}) is not closed "
            f"where PyYAML expected it (line {mark.line + 1}: {problem}); close the bracket or fix the indentation"
        )
    return f"{path.name}:{mark.line + 1}  not valid YAML: {problem}"


def _collect_lines(node: yaml.Node | None, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (str(key_node.value),)
            out[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = prefix + (str(i),)
            out[key] = item.start_mark.line + 1
            _collect_lines(item, key, out)


def _parse_override_value(raw: str) -> Any:
    # YAML scalars give the types a user expects: 16 -> int, true -> bool, [a, b] -> list.
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _set_path(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    cur: Any = data
    for k in keys[:-1]:
        if isinstance(cur, list) and k.isdigit() and int(k) < len(cur):
            cur = cur[int(k)]
            continue
        if not isinstance(cur.get(k), (dict, list)):
            cur[k] = {}
        cur = cur[k]
    if isinstance(cur, list) and keys[-1].isdigit():
        cur[int(keys[-1])] = value
    else:
        cur[keys[-1]] = value


def _deep_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(d)


# ---------------------------------------------------------------- schema walking


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated/list."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return _unwrap(args[0]) if args else []
    if origin is dict:
        args = typing.get_args(annotation)
        return _unwrap(args[1]) if len(args) == 2 else []
    return [annotation]


def _model_at(model: type[BaseModel], keys: tuple[str, ...] | list[Any]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of `keys` (list indices are skipped)."""
    cur: type[BaseModel] | None = model
    for k in keys:
        if cur is None:
            return None
        if isinstance(k, int) or (isinstance(k, str) and k.isdigit()):
            continue
        field = cur.model_fields.get(str(k))
        if field is None:
            return None
        nested = [t for t in _unwrap(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        cur = nested[0] if nested else None
    return cur


def _is_path_field(model: type[BaseModel], keys: tuple[str, ...]) -> bool:
    holder = _model_at(model, keys[:-1])
    if holder is None or keys[-1] not in holder.model_fields:
        return False
    return any(t is Path for t in _unwrap(holder.model_fields[keys[-1]].annotation))


# ---------------------------------------------------------------- error formatting


def _format_errors(
    model: type[BaseModel],
    err: ValidationError,
    lines: dict[tuple[str, ...], int],
    file_name: str | None,
    override_keys: set[tuple[str, ...]],
) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        loc = [str(x) for x in e["loc"]]
        # Union members add their type name to loc ("DocumentSource"); drop those for the reader.
        loc = [x for x in loc if not (x[:1].isupper() and x not in _all_field_names(model))]
        key = ".".join(loc) or "(top level)"
        where = ""
        line = _line_for(tuple(loc), lines)
        if tuple(loc) in override_keys or _from_override(tuple(loc), override_keys):
            where = "command line  "
        elif file_name and line:
            where = f"{file_name}:{line}  "
        problems.append(f"{where}{key}: {_explain(model, e, loc)}")
    return problems


def _all_field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    seen = seen or set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for f in model.model_fields.values():
        for t in _unwrap(f.annotation):
            if isinstance(t, type) and issubclass(t, BaseModel):
                names |= _all_field_names(t, seen)
    return names


def _line_for(loc: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _from_override(loc: tuple[str, ...], override_keys: set[tuple[str, ...]]) -> bool:
    # Either direction: `lora.r=0` errors at lora.r; `lora.rr=1` errors at lora.rr (unknown key);
    # `sft.lora.r=3` where sft has no `lora` errors at the shorter sft.lora.
    return any(loc[: len(k)] == k or k[: len(loc)] == loc for k in override_keys)


def _explain(model: type[BaseModel], e: Any, loc: list[str]) -> str:
    kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) else ""
    if kind == "extra_forbidden":
        holder = _model_at(model, loc[:-1])
        valid = sorted(holder.model_fields) if holder else []
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(valid)}"
        return f"unknown key; {hint}"
    if kind == "missing":
        holder = _model_at(model, loc[:-1])
        desc = ""
        if holder and loc[-1] in holder.model_fields:
            desc = holder.model_fields[loc[-1]].description or ""
        return "required key is missing" + (f" — {desc}" if desc else "")
    bounds = {
        "greater_than": ("> ", "gt"),
        "greater_than_equal": (">= ", "ge"),
        "less_than": ("< ", "lt"),
        "less_than_equal": ("<= ", "le"),
    }
    if kind in bounds:
        op, name = bounds[kind]
        return f"must be {op}{ctx.get(name)}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    if kind == "value_error":
        return str(ctx.get("error", e["msg"])) + got
    if kind == "assertion_error":
        return str(e["msg"]).removeprefix("Assertion failed, ")
    msg = str(e["msg"])
    return msg[:1].lower() + msg[1:] + got


# ---------------------------------------------------------------- output helpers


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """JSON/YAML-ready dict of a config (paths as strings), for run directories."""
    return cfg.model_dump(mode="json")


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, description) for every field, nested ones included; feeds --help."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = [t for t in _unwrap(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "" if nested else repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(field.default)
        rows.append((key, default, field.description or ""))
        if nested:
            rows.extend(describe_fields(nested[0], prefix=key + "."))
    return rows
