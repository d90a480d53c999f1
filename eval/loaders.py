"""Loaders for the public benchmark formats: rows of a local file -> `Example`s.

Run as: a library; `kofin.eval.tasks.load_examples` picks the loader named by a task's `format`.

Every problem in a file is collected and reported at once as `file:line  field: problem`
(JSONL rows through `kofin.data_ko.formats.read_records`, CSV rows by their line number).

- financial_mmlu_ko: `{"conversation_id", "conversations": [{"from": "human", "value":
  "question\\n1. ..\\n2. .."}, {"from": "gpt", "value": "2"}]}` (allganize/financial-mmlu-ko).
- kmmlu_csv: `question, answer (1-4), A, B, C, D, Category` (HAERAE-HUB/KMMLU).
- sentiment: one text column and one label column, names set per task, in JSONL / JSON / Parquet
  (`read_records`) or CSV. The public layouts: FPB `sentence, label` (0 negative, 1 neutral,
  2 positive, or the words), FiQA-SA `sentence, score` (a number binned by `score_thresholds`),
  TFNS `text, label` (0 bearish, 1 bullish, 2 neutral), NWGI `news, label` (seven levels from
  `strong negative` to `strong positive`, folded to three as FinGPT's benchmark folds them),
  KorFin-ASC `title, aspect, sentiment` (POSITIVE / NEGATIVE / NEUTRAL about `aspect`), FinGPT's
  headline and NER-type classification `input, output`; FinLoRA's test files `context, target`
  (the context is a whole prompt: `text_pattern` picks the input out of it).
- fpb_txt: FPB's original release, one `sentence@label` per line (`Sentences_50Agree.txt`).
- numeric_qa: `{"id"?, "question", "answer", "context"?}`; gsm8k: `answer` ends in `#### 72`.
- finlora: `{"context", "target"}` (FinLoRA's XBRL extraction and formula tasks).
- laws_questions: `{"qid", "question", "gold": [ids], "answer"}` (../shared/data/laws).
- pairwise_prompts / komt_bench / logickor: open-ended prompts for `kind: pairwise` (kofin.eval.pairwise).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kofin.data_ko.formats import DataInputError, RowError, read_records
from kofin.eval.tasks import Example, TaskSpec

MAX_PROBLEMS = 20
_OPTION_LINE = re.compile(r"^\s*(\d{1,2})[.)]\s*(.+?)\s*$")


def _collect(
    path: Path, rows: Iterable[tuple[str, Any]], convert: Callable[[str, Any], Example | None]
) -> list[Example]:
    """Convert every row; gather RowErrors with their place and raise them together."""
    out, problems = [], []
    for where, row in rows:
        try:
            ex = convert(where, row)
        except RowError as err:
            problems.append(f"{where}  {err}")
            if len(problems) >= MAX_PROBLEMS:
                raise DataInputError(str(path), problems, truncated=True) from None
            continue
        if ex is not None:
            out.append(ex)
    if problems:
        raise DataInputError(str(path), problems)
    return out


def _field(row: Any, key: str) -> str:
    if not isinstance(row, dict):
        raise RowError("", f"expected an object, got {type(row).__name__}")
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(key, f"missing or empty (the row has {sorted(row)})")
    return str(value).strip()


def _row_id(row: dict, where: str, *keys: str) -> str:
    for key in keys:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return where


# ---------------------------------------------------------------- multiple choice


def load_financial_mmlu_ko(spec: TaskSpec) -> list[Example]:
    def convert(where: str, row: Any) -> Example:
        turns = row.get("conversations") if isinstance(row, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            raise RowError(
                "conversations", "expected [{from: human, value: question}, {from: gpt, value: answer number}]"
            )
        human = next((t for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        gpt = next((t for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
        if human is None or gpt is None:
            raise RowError(
                "conversations", "needs one 'human' turn (question + numbered options) and one 'gpt' turn (answer)"
            )
        question_lines: list[str] = []
        options: list[str] = []
        for line in str(human.get("value", "")).splitlines():
            m = _OPTION_LINE.match(line)
            if m and int(m.group(1)) == len(options) + 1:
                options.append(m.group(2))
            elif options:  # an option that wraps onto the next line
                options[-1] += " " + line.strip()
            elif line.strip():
                question_lines.append(line.strip())
        if len(options) < 2:
            raise RowError("conversations[human].value", "found fewer than 2 numbered options ('1. ...', '2. ...')")
        m = re.match(r"\s*(\d{1,2})", str(gpt.get("value", "")))
        if not m or not 1 <= int(m.group(1)) <= len(options):
            raise RowError(
                "conversations[gpt].value",
                f"expected the correct option's number 1-{len(options)}, got {gpt.get('value')!r}",
            )
        return Example(
            _row_id(row, where, "conversation_id", "id"), where, "\n".join(question_lines), int(m.group(1)) - 1, options
        )

    return _collect(spec.path, read_records(spec.path), convert)


def _read_csv(path: Path) -> Iterable[tuple[str, dict]]:
    if not path.exists():
        raise DataInputError(str(path), [f"{path}: no such file; check the task's path"])
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        for row in reader:
            # line_num is the line the row ends on; a quoted newline spans lines, so report that.
            yield f"{path.name}:{reader.line_num}", row


def load_kmmlu_csv(spec: TaskSpec) -> list[Example]:
    wanted = set(spec.categories)

    def convert(where: str, row: dict) -> Example | None:
        if wanted and row.get("Category", "").strip() not in wanted:
            return None
        options = [_field(row, letter) for letter in "ABCD"]
        answer = _field(row, "answer")
        if answer not in {"1", "2", "3", "4"}:
            raise RowError("answer", f"expected 1-4 (KMMLU numbers the options A=1 .. D=4), got {answer!r}")
        meta = {"category": row.get("Category", "")}
        return Example(_row_id(row, where, "id"), where, _field(row, "question"), int(answer) - 1, options, meta)

    return _collect(spec.path, _read_csv(spec.path), convert)


# ---------------------------------------------------------------- classification


def _label_index(spec: TaskSpec, raw: str) -> int:
    label = _score_label(spec, raw) if spec.score_thresholds else spec.label_map.get(raw, raw)
    if label not in spec.labels:
        known = sorted(spec.label_map) or spec.labels
        raise RowError(spec.label_field, f"label {raw!r} is not one of {known}; add it to the task's label_map")
    return spec.labels.index(label)


def load_sentiment(spec: TaskSpec) -> list[Example]:
    pattern = re.compile(spec.text_pattern, re.S) if spec.text_pattern else None

    def convert(where: str, row: Any) -> Example:
        text = _field(row, spec.text_field)
        if pattern is not None:  # FinLoRA / FinGPT rows carry a whole prompt; keep only what the pattern picks
            m = pattern.search(text)
            if not m:
                raise RowError(spec.text_field, f"does not match text_pattern {spec.text_pattern!r}")
            text = "\n".join(g.strip() for g in m.groups() if g)
        if spec.aspect_field:  # aspect-based (KorFin-ASC): the same sentence can be good for one firm, bad for another
            text = f"{text}\n대상: {_field(row, spec.aspect_field)}"
        return Example(
            _row_id(row, where, "id"), where, text, _label_index(spec, _field(row, spec.label_field)), list(spec.labels)
        )

    rows = _read_csv(spec.path) if spec.path.suffix.lower() in (".csv", ".tsv") else read_records(spec.path)
    return _collect(spec.path, rows, convert)


def load_fpb_txt(spec: TaskSpec) -> list[Example]:
    """Financial PhraseBank as released: `sentence@label` per line, Latin-1 in the original, UTF-8 accepted."""
    if not spec.path.exists():
        raise DataInputError(str(spec.path), [f"{spec.path}: no such file; check the task's path"])
    raw = spec.path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # the original FPB files are ISO-8859-1

    def rows() -> Iterable[tuple[str, Any]]:
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{spec.path.name}:{lineno}", line

    def convert(where: str, line: str) -> Example:
        sentence, at, label = line.rstrip().rpartition("@")
        if not at or not sentence.strip():
            raise RowError("line", "expected 'sentence@label' (e.g. '...rose 5%.@positive')")
        return Example(where, where, sentence.strip(), _label_index(spec, label.strip()), list(spec.labels))

    return _collect(spec.path, rows(), convert)


def _score_label(spec: TaskSpec, raw: str) -> str:
    try:
        score = float(raw)
    except ValueError:
        raise RowError(
            spec.label_field, f"expected a numeric sentiment score (score_thresholds is set), got {raw!r}"
        ) from None
    return next(
        (label for label, t in zip(spec.labels[:-1], spec.score_thresholds, strict=True) if score < t), spec.labels[-1]
    )


# ---------------------------------------------------------------- generated answers


def load_numeric_qa(spec: TaskSpec) -> list[Example]:
    def convert(where: str, row: Any) -> Example:
        meta = {"context": str(row["context"])} if row.get("context") else {}
        return Example(_row_id(row, where, "id"), where, _field(row, "question"), _field(row, "answer"), meta=meta)

    return _collect(spec.path, read_records(spec.path), convert)


def load_finlora(spec: TaskSpec) -> list[Example]:
    """FinLoRA's `{"context": instruction + input, "target": answer}` rows (XBRL tag/value extraction, formulas)."""

    def convert(where: str, row: Any) -> Example:
        return Example(_row_id(row, where, "id"), where, _field(row, "context"), _field(row, "target"))

    return _collect(spec.path, read_records(spec.path), convert)


def load_gsm8k(spec: TaskSpec) -> list[Example]:
    def convert(where: str, row: Any) -> Example:
        solution = _field(row, "answer")
        final = solution.rsplit("####", 1)
        if len(final) != 2 or not final[1].strip():
            raise RowError("answer", "GSM8K answers end in '#### <number>'; none found")
        return Example(
            _row_id(row, where, "id"),
            where,
            _field(row, "question"),
            final[1].strip(),
            meta={"solution": final[0].strip()},
        )

    return _collect(spec.path, read_records(spec.path), convert)


def load_laws_questions(spec: TaskSpec) -> list[Example]:
    def convert(where: str, row: Any) -> Example:
        gold = row.get("gold") if isinstance(row, dict) else None
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list) or not gold or not all(isinstance(g, str) for g in gold):
            raise RowError("gold", 'expected a list of gold source ids, e.g. ["은행법 제34조"]')
        return Example(_field(row, "qid"), where, _field(row, "question"), _field(row, "answer"), meta={"gold": gold})

    return _collect(spec.path, read_records(spec.path), convert)


def _pairwise_loader(format: str) -> Callable[[TaskSpec], list[Example]]:
    """kofin's pairwise prompts, KoMT-Bench's question.jsonl or LogicKor's questions, by path (kofin.eval.pairwise)."""
    from kofin.eval.pairwise import prompt_example

    def load(spec: TaskSpec) -> list[Example]:
        def convert(where: str, row: Any) -> Example:
            try:
                return prompt_example(row, where, format)
            except ValueError as err:
                raise RowError("turns", str(err)) from None

        return _collect(spec.path, read_records(spec.path), convert)

    return load


LOADERS: dict[str, Callable[[TaskSpec], list[Example]]] = {
    "financial_mmlu_ko": load_financial_mmlu_ko,
    "kmmlu_csv": load_kmmlu_csv,
    "sentiment": load_sentiment,
    "fpb_txt": load_fpb_txt,
    "numeric_qa": load_numeric_qa,
    "gsm8k": load_gsm8k,
    "finlora": load_finlora,
    "laws_questions": load_laws_questions,
    "pairwise_prompts": _pairwise_loader("pairwise_prompts"),
    "komt_bench": _pairwise_loader("komt_bench"),
    "logickor": _pairwise_loader("logickor"),
}
