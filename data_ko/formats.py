"""Read user data files and normalise their rows to OpenAI-style messages.

Readers (`read_records`) accept JSONL, a JSON array, parquet, or a `datasets` save_to_disk
folder, and yield `(where, row)` with `where` = `file.jsonl:LINE` or `file.parquet[INDEX]`.
Normalisers turn one row into the shape kofin writes:

    SFT:        [{"role": "system"|"user"|"assistant", "content": str}, ...]
    preference: {"prompt": [msgs...], "chosen": [assistant msgs], "rejected": [assistant msgs]}

and raise `RowError(field_path, message)`; `read_instructions` / `read_preferences` collect up to
MAX_PROBLEMS of those per file and raise one `DataInputError` naming `file:line  field: problem`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kofin.data_ko.corpus import read_utf8
from kofin.errors import KofinError

MAX_PROBLEMS = 20
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataInputError(KofinError, ValueError):
    """Malformed user data. `problems` holds one `where  field: problem` line each."""

    def __init__(self, source: str, problems: list[str], truncated: bool = False):
        self.source = source
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{len(problems)}{'+' if truncated else ''} {noun} in {source}"]
        lines += [f"  {p}" for p in problems]
        if truncated:
            lines.append(f"  (stopped after {len(problems)}; fix these and run again)")
        super().__init__("\n".join(lines))


class RowError(ValueError):
    """One problem in one row; `field` is the path inside the row, e.g. `messages[2].role`."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


# ---------------------------------------------------------------- readers


def read_records(path: Path, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """Rows of a data file as `(where, row)`; raise DataInputError on unreadable input."""
    path = Path(path)
    if not path.exists():
        raise DataInputError(str(path), [f"{path}: no such file or folder; check the path in the config"])
    if path.is_dir():
        yield from _read_saved_dataset(path, split)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif path.suffix == ".json":
        yield from _read_json_array(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise DataInputError(
            str(path),
            [
                f"{path.name}: unsupported file type '{path.suffix}'; use .jsonl, .json, .parquet "
                "or a datasets save_to_disk folder"
            ],
        )


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    problems: list[str] = []
    rows: list[tuple[str, Any]] = []
    for lineno, line in enumerate(read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            # Without the newline, a line cut short reports the column where it ends.
            rows.append((f"{path.name}:{lineno}", json.loads(line.rstrip("\r\n"))))
        except json.JSONDecodeError as err:
            problems.append(f"{path.name}:{lineno}  not valid JSON: {err.msg} at column {err.colno}")
            if len(problems) >= MAX_PROBLEMS:
                raise DataInputError(str(path), problems, truncated=True) from None
    # Parse the whole file first so every broken line is reported in one go.
    if problems:
        raise DataInputError(str(path), problems)
    yield from rows


def _read_json_array(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise DataInputError(
            str(path), [f"{path.name}:{err.lineno}  not valid JSON: {err.msg} at column {err.colno}"]
        ) from None
    if not isinstance(data, list):
        raise DataInputError(
            str(path),
            [
                f"{path.name}:1  expected a JSON array of rows, got {type(data).__name__}; "
                "write [ {...}, {...} ] or use JSONL"
            ],
        )
    for i, row in enumerate(data):
        yield f"{path.name}[{i}]", row


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataInputError(str(path), [f"{path.name}: not a readable parquet file ({err})"]) from None
    index = 0
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            yield f"{path.name}[{index}]", row
            index += 1


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataInputError(
            str(path),
            [
                f"{path}: not a datasets save_to_disk folder ({err}); point path at the folder "
                "Dataset.save_to_disk wrote, or at a .jsonl/.json/.parquet file"
            ],
        ) from None
    name = path.name
    if isinstance(data, datasets.DatasetDict):
        splits = sorted(data)
        if split is None:
            raise DataInputError(
                str(path), [f"{path}: holds splits {splits}; set split: to one of them in this source"]
            )
        if split not in data:
            raise DataInputError(str(path), [f"{path}: no split '{split}'; it holds {splits}"])
        data, name = data[split], f"{path.name}[{split}]"
    elif split is not None:
        raise DataInputError(str(path), [f"{path}: a single Dataset has no splits; remove split: '{split}'"])
    for i, row in enumerate(data):
        yield f"{name}[{i}]", row


# ---------------------------------------------------------------- field checks


def _string(value: Any, field: str, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise RowError(field, "missing")
        return ""
    if not isinstance(value, str):
        raise RowError(field, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise RowError(field, "empty")
    return value


def _mapping(row: Any, field: str = "") -> dict:
    if not isinstance(row, dict):
        raise RowError(field, f"expected an object, got {type(row).__name__}")
    return row


def _list(value: Any, field: str) -> list:
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, list):
        raise RowError(field, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise RowError(field, "empty list")
    return value


def messages_from_openai(value: Any, field: str = "messages") -> list[dict[str, str]]:
    """`[{role, content}]` checked: known roles, string content."""
    out = []
    for i, msg in enumerate(_list(value, field)):
        where = f"{field}[{i}]"
        msg = _mapping(msg, where)
        role = msg.get("role")
        if role is None:
            raise RowError(f"{where}.role", f"missing; expected one of {', '.join(ROLES)}")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        out.append({"role": role, "content": _string(msg.get("content"), f"{where}.content")})
    return out


# ---------------------------------------------------------------- instruction rows


def detect_instruction_format(row: dict) -> str | None:
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    return None


def normalize_alpaca(row: dict) -> list[dict[str, str]]:
    instruction = _string(row.get("instruction"), "instruction")
    extra = _string(row.get("input"), "input", required=False).strip()
    output = _string(row.get("output"), "output")
    system = _string(row.get("system"), "system", required=False).strip()
    user = f"{instruction.strip()}\n\n{extra}" if extra else instruction.strip()
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output.strip()}]


def normalize_sharegpt(row: dict) -> list[dict[str, str]]:
    out = []
    for i, turn in enumerate(_list(row.get("conversations"), "conversations")):
        where = f"conversations[{i}]"
        turn = _mapping(turn, where)
        speaker = turn.get("from")
        if speaker is None:
            raise RowError(f"{where}.from", "missing; expected one of human, gpt, system")
        if speaker not in SHAREGPT_ROLES:
            raise RowError(f"{where}.from", f"unknown speaker {speaker!r}; expected one of human, gpt, system")
        out.append({"role": SHAREGPT_ROLES[speaker], "content": _string(turn.get("value"), f"{where}.value")})
    return out


def normalize_openai(row: dict) -> list[dict[str, str]]:
    return messages_from_openai(row.get("messages"), "messages")


INSTRUCTION_FORMATS: dict[str, Callable[[dict], list[dict[str, str]]]] = {
    "alpaca": normalize_alpaca,
    "sharegpt": normalize_sharegpt,
    "openai": normalize_openai,
}


def normalize_instruction(row: Any, fmt: str = "auto") -> list[dict[str, str]]:
    """Messages of one instruction row in `fmt` (or the format its keys show, for auto)."""
    row = _mapping(row)
    if fmt == "auto":
        detected = detect_instruction_format(row)
        if detected is None:
            keys = ", ".join(sorted(map(str, row))) or "none"
            raise RowError(
                "",
                f"unknown row shape (keys: {keys}); expected messages (openai), "
                "conversations (sharegpt) or instruction/output (alpaca)",
            )
        fmt = detected
    return INSTRUCTION_FORMATS[fmt](row)


# ---------------------------------------------------------------- preference rows


def _as_messages(value: Any, field: str, default_role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": default_role, "content": _string(value, field)}]
    return messages_from_openai(value, field)


def _same(a: dict[str, str], b: dict[str, str]) -> bool:
    return a["role"] == b["role"] and a["content"] == b["content"]


def _completion(messages: list[dict[str, str]], field: str, offset: int) -> list[dict[str, str]]:
    if not messages:
        raise RowError(field, "no assistant turn after the prompt")
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            raise RowError(f"{field}[{offset + i}].role", f"expected 'assistant' after the prompt, got {msg['role']!r}")
    return messages


def normalize_explicit_preference(row: dict) -> dict[str, list[dict[str, str]]]:
    """`prompt` (string or messages), `chosen`/`rejected` (string or messages), optional `system`."""
    if "prompt" not in row:
        raise RowError("prompt", "missing; explicit rows need prompt, chosen and rejected")
    prompt = _as_messages(row.get("prompt"), "prompt", "user")
    system = _string(row.get("system"), "system", required=False).strip()
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}] + prompt
    out: dict[str, list[dict[str, str]]] = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        msgs = _as_messages(row.get(key), key, "assistant")
        offset = 0
        # Some datasets repeat the prompt at the start of chosen/rejected; keep only the answer.
        # A prefix test: msgs is the longer one, so zip stops at the end of the prompt on purpose.
        if len(msgs) > len(prompt) and all(_same(a, b) for a, b in zip(prompt, msgs, strict=False)):
            offset = len(prompt)
        out[key] = _completion(msgs[offset:], key, offset)
    return out


def normalize_implicit_preference(row: dict) -> dict[str, list[dict[str, str]]]:
    """Whole conversations in `chosen`/`rejected`; the prompt is their shared history up to the
    last user turn (earlier assistant turns included), the rest of each is the completion."""
    chosen = messages_from_openai(row.get("chosen"), "chosen")
    rejected = messages_from_openai(row.get("rejected"), "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and _same(chosen[shared], rejected[shared]):
        shared += 1
    user_turns = [i for i in range(shared) if chosen[i]["role"] == "user"]
    if not user_turns:
        raise RowError(
            "chosen",
            "chosen and rejected share no user turn, so there is no prompt; "
            "start both with the same user message or give an explicit prompt",
        )
    cut = user_turns[-1] + 1
    return {
        "prompt": chosen[:cut],
        "chosen": _completion(chosen[cut:], "chosen", cut),
        "rejected": _completion(rejected[cut:], "rejected", cut),
    }


def normalize_preference(row: Any, fmt: str = "auto") -> dict[str, list[dict[str, str]]]:
    row = _mapping(row)
    if fmt == "auto":
        fmt = "explicit" if "prompt" in row else "implicit"
    out = normalize_explicit_preference(row) if fmt == "explicit" else normalize_implicit_preference(row)
    if [m["content"] for m in out["chosen"]] == [m["content"] for m in out["rejected"]]:
        raise RowError("rejected", "identical to chosen; a pair must differ")
    return out


# ---------------------------------------------------------------- whole files


def _collect(path: Path, split: str | None, convert: Callable[[Any], dict]) -> list[dict]:
    rows: list[dict] = []
    problems: list[str] = []
    for where, raw in read_records(path, split):
        try:
            rows.append(convert(raw) | {"source": where})
        except RowError as err:
            problems.append(f"{where}  {err}")
            if len(problems) >= MAX_PROBLEMS:
                raise DataInputError(str(path), problems, truncated=True) from None
    if problems:
        raise DataInputError(str(path), problems)
    return rows


def read_instructions(path: Path, fmt: str = "auto", split: str | None = None) -> list[dict]:
    """`{"messages": [...], "source": "file:line"}` for every row, or one DataInputError."""
    return _collect(path, split, lambda raw: {"messages": normalize_instruction(raw, fmt)})


def read_preferences(path: Path, fmt: str = "auto", split: str | None = None) -> list[dict]:
    """`{"prompt", "chosen", "rejected", "source"}` for every row, or one DataInputError."""
    return _collect(path, split, lambda raw: normalize_preference(raw, fmt))
