"""The eval stage: score every model on every task into a run directory.

Run as:
    kofin eval --config configs/eval/tiny.yaml [key.path=value ...]

    <output_dir>/
      records/<model>/<task>.jsonl   one line per example: prompt inputs, generation, scores
      records/<model>/model.json     which weights those records were scored with
      records/<model>/latency.json   scoring seconds and examples per task (runs comparing models)
      metrics.json                   model x task metrics; intervals (n, 95%) on every cell; comparisons (each
                                     model - base, paired test, significant?); verdict; forgetting deltas;
                                     pairwise judge + Bradley-Terry; training cost (kofin.eval.cost)
      finlora_table.csv / .md        runs comparing models: FinLoRA's models x tasks table with cost columns
                                     (kofin.eval.study), also a section of the report
      report.md  report.html  charts/*.png   the internal eval report (kofin.eval.report)
      config.yaml  manifest.json  COMPLETE

Resumable: records are appended a chunk at a time, and an example whose record is already there
(in `<output_dir>.partial/` after a kill, or in the finished `<output_dir>` when the config grows
by a model, a task or a larger `limit`) is not scored again, as long as the model's weights and
the example's prompt are unchanged. Pairwise tasks are judged after every model has answered
(kofin.eval.pairwise_run); a judgement is kept while the judge and both answers are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from kofin.errors import KofinError
from kofin.eval.config import EvalConfig, EvalModel

# Re-exported: the cost lineage lives in kofin.eval.cost; older callers import it from here.
from kofin.eval.cost import COST_COLUMNS as COST_COLUMNS
from kofin.eval.cost import model_cost, training_table
from kofin.eval.cost import training_cost as training_cost
from kofin.eval.tasks import Example, TaskSpec, load_examples, load_task, prompt_for
from kofin.rundir import atomic_write_json, atomic_write_text, is_complete, open_run, require_complete

RAG_RECORD_VERSION = 2


class EvalError(KofinError):
    """A model or task the eval stage cannot use."""


def main(cfg: EvalConfig, *, quiet: bool = False) -> Path:
    """Score every model on every task and write the report; `quiet`: no tqdm bars (a display
    choice, not config: the run's digest must not depend on how it was shown)."""
    progress = not quiet
    specs = [load_task(t) for t in cfg.tasks]
    examples = {s.name: load_examples(s, cfg.limit) for s in specs}
    models = {m.name: resolve_model(m) for m in cfg.models}
    inputs: dict[str, Path | None] = {f"model_{n}": p for n, (p, manifest) in models.items() if manifest is not None}
    inputs |= {f"task_{s.name}": s.path for s in specs}
    inputs |= {f"training_run_{i}": p for i, p in enumerate(cfg.training_runs)}
    with open_run("eval", cfg, inputs=inputs, resume=True) as run:
        records_root = run.path / "records"
        _carry_finished_records(cfg.output_dir / "records", records_root)
        results: dict[str, dict[str, dict[str, float]]] = {}
        kept: dict[str, dict[str, list[dict]]] = {}
        scored = 0
        from kofin.eval.judge import citation_judge

        judge, judge_name = citation_judge(cfg) if any(s.kind == "rag" for s in specs) else (None, "lexical")
        bert = None
        if cfg.bertscore_encoder is not None:
            from kofin.eval.metrics import BertScorer

            bert = BertScorer(str(cfg.bertscore_encoder))
        pairwise = [s for s in specs if s.kind == "pairwise"]
        if pairwise and cfg.pairwise_judge is None:
            raise EvalError(
                f"task {pairwise[0].name} is kind: pairwise and needs a judge: set pairwise_judge: "
                "{path: MODEL_DIR} or {endpoint: URL, served_model: NAME} in the eval config"
            )
        stores: dict[str, ModelRecords] = {}
        # Two or more models make a comparison: each model's scoring time is kept for FinLoRA's table.
        comparing = len(cfg.models) > 1
        for m in cfg.models:
            path, manifest = models[m.name]
            store = stores[m.name] = ModelRecords(
                records_root / m.name, path, manifest, f"{m.endpoint} {m.served_model}" if m.endpoint else None
            )
            store.timed = comparing
            backend = None
            results[m.name], kept[m.name] = {}, {}
            for spec in specs:
                todo = store.missing(spec, examples[spec.name], judge_name)
                if todo and backend is None:
                    backend = make_backend(m, path, cfg)
                scored += _score_in_chunks(spec, todo, backend, store, cfg, m.name, (judge, judge_name), progress)
                if spec.kind != "pairwise":  # pairwise metrics wait for the judge, after every model answered
                    results[m.name][spec.name] = store.metrics(spec, examples[spec.name], bert)
                    kept[m.name][spec.name] = store.ordered()
        preference = {}
        if pairwise:
            from kofin.eval.pairwise_run import judge_tasks

            preference = judge_tasks(cfg, pairwise, examples, stores, results, kept)
        for stale in records_root.iterdir():
            if stale.name not in results:  # a model dropped from the config since the carried run
                shutil.rmtree(stale)
        metrics = {
            "models": [m.name for m in cfg.models],
            "base": cfg.base_model.name,
            # Citation scores from different judges are not comparable: the report says which one judged.
            "citation_judge": judge_name,
            "tasks": {
                s.name: {
                    "kind": s.kind,
                    "group": s.group,
                    "examples": len(examples[s.name]),
                    "description": s.description,
                    "path": str(s.path),
                }
                for s in specs
            },
            "results": results,
            "forgetting": forgetting_deltas(
                results, cfg.base_model.name, [s.name for s in specs if s.group == "general"]
            ),
            "training": training_table(models, cfg.training_runs, cfg.gpu_price),
            "resamples": cfg.bootstrap_resamples,
            "pairwise": preference,
        }
        from kofin.eval.verdict import significance

        costs = {name: model_cost(manifest, cfg.gpu_price) for name, (_, manifest) in models.items()}
        metrics |= significance(specs, kept, cfg.base_model.name, costs, cfg.bootstrap_resamples, cfg.seed)
        atomic_write_json(run.path / "metrics.json", metrics)
        from kofin.eval.study import build_report_with_table, write_finlora_table

        table = []  # FinLoRA's models x tasks table with cost columns, for runs that compare models
        if comparing:
            table = write_finlora_table(run.path, metrics, {name: manifest for name, (_, manifest) in models.items()})
        if cfg.report:
            build_report_with_table(run.path, table)
        run.metrics.update(
            examples_scored=scored, examples_reused=sum(len(e) for e in examples.values()) * len(models) - scored
        )
    return cfg.output_dir


def make_backend(m: EvalModel, path: Path, cfg: EvalConfig) -> Any:
    if m.endpoint is not None:
        from kofin.eval.endpoint import EndpointBackend

        return EndpointBackend(m.endpoint, m.served_model, batch_size=cfg.batch_size, api_key_env=m.api_key_env)
    from kofin.eval.engine import TransformersBackend

    return TransformersBackend(
        path, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype, cpu_threads=cfg.cpu_threads
    )


def resolve_model(m: EvalModel, where: str | None = None) -> tuple[Path, dict | None]:
    """The model folder and, when it is a kofin run directory, that run's manifest."""
    if m.endpoint is not None:
        return Path("endpoint"), None  # no local folder; records are keyed by URL and served name
    if m.path is None:
        from kofin.tiny import default_tiny_model

        path = default_tiny_model()
    else:
        path = m.path
    where = where or f"models[{m.name}].path"
    manifest = None
    if (path / "manifest.json").exists() or Path(f"{path}.partial").exists():
        manifest = require_complete(path, what=where)
    if (path / "config.json").exists():
        return path, manifest
    if manifest is not None and manifest.get("stage") == "merge" and (path / "merged" / "config.json").exists():
        return path / "merged", manifest  # a merge run keeps the merged model in merged/
    if (path / "adapter_config.json").exists():
        from kofin.eval.adapters import adapter_stack

        adapter_stack(path, where)  # the base and earlier adapters are found now, not after other models scored
        return path, manifest
    raise EvalError(
        f"{where}: {path} has no config.json; point it at a model folder, a run directory holding one, "
        "or a kofin sft / dpo run (a LoRA adapter)."
    )


class ModelRecords:
    """One model's records folder: what is already scored, and appending new records."""

    def __init__(self, folder: Path, model_path: Path, manifest: dict | None, endpoint: str | None = None):
        self.folder = folder
        self.timed = False  # add_latency keeps the scoring time (runs that compare models)
        if endpoint is not None:  # "URL served-name": a server's weights are not ours to hash
            identity: dict[str, Any] = {"endpoint": endpoint}
        else:
            identity = {"path": str(model_path), "weights": weights_digest(model_path, manifest)}
            from kofin.eval.adapters import adapter_stack, is_adapter_run

            if is_adapter_run(model_path):  # what the adapter applies to decides the scores as much as the adapter
                stack = adapter_stack(model_path)
                identity["base"] = str(stack.base)
                identity["merged_first"] = [weights_digest(a, require_complete(a)) for a in stack.adapters[:-1]]
        info = folder / "model.json"
        if info.exists() and json.loads(info.read_text(encoding="utf-8")) != identity:
            shutil.rmtree(folder)  # other weights under the same name: nothing here is reusable
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(info, identity)

    def _file(self, spec: TaskSpec) -> Path:
        return self.folder / f"{spec.name}.jsonl"

    def done(self, spec: TaskSpec) -> dict[str, dict]:
        path = self._file(spec)
        if not path.exists():
            return {}
        out = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill is scored again
                out[rec["id"]] = rec
        return out

    def missing(self, spec: TaskSpec, examples: list[Example], judge_name: str) -> list[Example]:
        done = self.done(spec)
        return [ex for ex in examples if done.get(ex.id, {}).get("key") != example_key(spec, ex, judge_name)]

    def add_latency(self, spec: TaskSpec, seconds: float, examples: int) -> None:
        """Scoring time of this model, per task (the study table's inference latency). Kept beside the
        records it timed: records reused from an earlier attempt keep their timing, new weights reset both."""
        from kofin.eval.study import LATENCY_FILE

        if not self.timed:
            return
        path = self.folder / LATENCY_FILE
        timing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        task = timing.setdefault(spec.name, {"seconds": 0.0, "examples": 0})
        task["seconds"] = round(task["seconds"] + seconds, 4)
        task["examples"] += examples
        atomic_write_json(path, timing)

    def append(self, spec: TaskSpec, records: list[dict]) -> None:
        with open(self._file(spec), "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            f.flush()

    def records_in_order(self, spec: TaskSpec, examples: list[Example]) -> list[dict]:
        done = self.done(spec)
        return [done[ex.id] for ex in examples]

    def rewrite(self, spec: TaskSpec, records: list[dict]) -> None:
        atomic_write_text(self._file(spec), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def ordered(self) -> list[dict]:
        """The records of the last `metrics` call, in example order."""
        return self._ordered

    def metrics(self, spec: TaskSpec, examples: list[Example], bert: Any = None) -> dict[str, float]:
        from kofin.eval.scoring import task_metrics

        done = self.done(spec)
        ordered = [done[ex.id] for ex in examples]
        if bert is not None and spec.kind in ("numeric_qa", "rag"):
            for r in ordered:  # records resumed from a run without an encoder get theirs now
                if "bertscore_f1" not in r:
                    r["bertscore_f1"] = round(bert.f1(r["generation"], str(r["gold"])), 6)
        # Rewrite in example order, without superseded or stale lines, so the file is the record of this run.
        path = self._file(spec)
        atomic_write_text(
            path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
        )  # a kill keeps the old file
        self._ordered = ordered
        return task_metrics(spec, ordered)


def example_key(spec: TaskSpec, ex: Example, judge_name: str = "lexical") -> str:
    """Changes when anything that decides the example's scores changes (the citation judge: RAG only)."""
    judge_name = judge_name if spec.kind == "rag" else ""
    # RAG records gained citation-format fields: records written before them are scored again.
    schema = RAG_RECORD_VERSION if spec.kind == "rag" else 0
    blob = json.dumps(
        [
            spec.kind,
            prompt_for(spec, ex),
            ex.choices,
            ex.answer,
            spec.max_new_tokens,
            judge_name,
            str(spec.kb or spec.documents or ""),
            spec.answer_with,
            spec.k,
        ]
        + ([schema] if schema else []),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def weights_digest(path: Path, manifest: dict | None) -> str:
    if manifest is not None:  # the run's recorded output hashes: cheap for a 20 GB run
        return hashlib.sha256(json.dumps(manifest.get("outputs", {}), sort_keys=True).encode()).hexdigest()
    # A plain model folder: names, sizes and modification times, not gigabytes of reading.
    facts = sorted(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def _carry_finished_records(finished: Path, work: Path) -> None:
    """Seed a fresh attempt with the records of the finished run it will replace."""
    if work.exists() or not is_complete(finished.parent):
        return
    if finished.is_dir():
        shutil.copytree(finished, work)


def _score_in_chunks(
    spec: TaskSpec,
    todo: list[Example],
    backend: Any,
    store: ModelRecords,
    cfg: EvalConfig,
    model: str,
    judge: tuple[Any, str] = (None, "lexical"),
    progress: bool = True,
) -> int:
    if not todo:
        return 0
    from tqdm import tqdm

    from kofin.eval.scoring import score_examples

    # Each chunk is written before the next starts: a kill loses at most one chunk of work.
    chunk = cfg.batch_size * 4
    with tqdm(total=len(todo), desc=f"{model} / {spec.name}", unit="ex", disable=not progress) as bar:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            started = time.perf_counter()
            records = score_examples(spec, part, backend, citation_judge=judge[0])
            store.add_latency(spec, time.perf_counter() - started, len(part))
            for ex, rec in zip(part, records, strict=True):
                rec["key"] = example_key(spec, ex, judge[1])
            store.append(spec, records)
            bar.update(len(part))
    return len(todo)


def forgetting_deltas(results: dict[str, dict[str, dict[str, float]]], base: str, general: list[str]) -> dict:
    """Each non-base model's metric minus the base's on the general tasks: model - base, so on a
    higher-is-better metric a negative delta is forgetting (its test: metrics.json `comparisons`)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, per_task in results.items():
        if name == base:
            continue
        out[name] = {t: {k: round(v - results[base][t][k], 6) for k, v in per_task[t].items()} for t in general}
    return out
