"""Export kofin's multiple-choice tasks as an lm-evaluation-harness `--include_path` folder.

Run as:
    kofin eval export-lm-eval OUT_DIR [--tasks fin_mcq_kmmlu fin_sentiment ...]
    lm_eval --model hf --model_args pretrained=MODEL --include_path OUT_DIR --tasks kofin_fin_mcq_kmmlu

Each task becomes `kofin_<name>.yaml` plus `kofin_<name>.jsonl` holding the exact prompt and
options kofin scores (so both tools see the same text). lm-eval's `acc` / `acc_norm` then equal
kofin's `acc` / `acc_norm`: same continuation (" " + option), same token split, same per-character
normalisation. Generated-answer tasks (numeric_qa) are not exported: lm-eval has no Korean
number normalisation, so its exact_match would disagree with kofin's.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kofin.eval.tasks import TaskError, bundled_tasks, load_examples, load_task, prompt_for
from kofin.rundir import atomic_write_text

PREFIX = "kofin_"


def export_lm_eval(task_refs: list[str] | None, out_dir: Path, limit: int | None = None) -> list[Path]:
    """Write one YAML + JSONL pair per multiple-choice task; return the YAML paths."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [load_task(t) for t in (task_refs or bundled_tasks())]
    chosen = [s for s in specs if s.kind in ("mcq", "classification")]
    skipped = [s.name for s in specs if s not in chosen]
    if task_refs and skipped:
        raise TaskError(f"only multiple-choice tasks (mcq, classification) can be exported; {skipped} generate answers")
    written = []
    for spec in chosen:
        name = PREFIX + spec.name
        data = out_dir / f"{name}.jsonl"
        rows = [
            {"id": ex.id, "prompt": prompt_for(spec, ex), "choices": ex.choices, "gold": ex.answer}
            for ex in load_examples(spec, limit)
        ]
        atomic_write_text(data, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        task = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            # Column names: lm-eval reads the value as is, so no template can alter the prompt.
            "doc_to_text": "prompt",
            "doc_to_choice": "choices",
            "doc_to_target": "gold",
            "metric_list": [
                {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")
            ],
            "metadata": {"version": 1.0, "kofin_task": spec.name, "description": spec.description},
        }
        path = out_dir / f"{name}.yaml"
        atomic_write_text(path, yaml.safe_dump(task, allow_unicode=True, sort_keys=False))
        written.append(path)
    return written
