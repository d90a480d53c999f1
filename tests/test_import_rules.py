"""What may import what (DESIGN.md, "How stages talk"), checked over every module of the package.

kofin/ core <- data_ko/ (the shared library: formats, corpus, PII, Korean text, the citation
format) <- every stage. eval/ may use only what `kofin.serve` itself exports (its one answer
function and the KB builder it needs, serve/__init__.py PUBLIC), nothing of serve's modules. No
other stage imports another. Function-local imports count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("training", "merge", "serve", "eval", "data_ko")
# The one exception, by design: the embedded tiny model (core: every stage's default model) has
# its Korean tokenizer trained on the bundled knowledge base, which data_ko's corpus module finds.
ALLOWED = {("kofin.tiny", "kofin.data_ko.corpus")}


def owner(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kofin":
        return None
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return "core"


def violations(source: str, module: str) -> list[str]:
    """Imports in `source` (the text of `module`) that the rule forbids, as 'line: target'."""
    from kofin.serve import PUBLIC

    me = owner(module)
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [(node.module, [a.name for a in node.names])]
        else:
            continue
        for target, names in targets:
            other = owner(target)
            if other in (None, me, "core") or (other == "data_ko" and me != "core") or (module, target) in ALLOWED:
                continue
            if me == "eval" and target == "kofin.serve" and names and all(n in PUBLIC for n in names):
                continue
            bad.append(f"{node.lineno}: {target} {names or ''}".rstrip())
    return bad


def package_modules():
    """Every module of the package, subpackages included (training/fedlora/ is kofin.training.fedlora,
    part of the training stage), with its import name."""
    for folder, package in [("kofin", "kofin")] + [(s, f"kofin.{s}") for s in STAGES]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            yield path, ".".join(parts)


def test_the_walk_reaches_subpackages():
    modules = dict((m, p) for p, m in package_modules())
    assert modules["kofin.training.fedlora"] == ROOT / "training" / "fedlora" / "__init__.py"
    assert modules["kofin.serve.app"] == ROOT / "serve" / "app.py"
    assert owner("kofin.training.fedlora.dp") == "training"


def test_every_stage_folder_is_mapped_for_mypy():
    # mypy reads the stage folders as kofin.<stage> through typecheck/kofin/<stage> ([tool.mypy]);
    # a stage without its link there would not be type-checked at all.
    for stage in STAGES:
        link = ROOT / "typecheck" / "kofin" / stage
        assert link.is_symlink() and link.resolve() == (ROOT / stage).resolve(), link
    for core in (ROOT / "kofin").glob("*.py"):  # the core modules, one link each
        link = ROOT / "typecheck" / "kofin" / core.name
        assert link.is_symlink() and link.resolve() == core.resolve(), f"{link}: ln -s ../../kofin/{core.name}"


def test_no_module_imports_across_the_stage_boundaries():
    found = {}
    for path, module in package_modules():
        bad = violations(path.read_text(encoding="utf-8"), module)
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    assert not found, f"imports that cross a stage boundary (DESIGN.md, How stages talk): {found}"


def test_the_check_catches_each_kind_of_crossing():
    # A checker that finds nothing would pass the test above on any code: plant each crossing.
    assert violations("from kofin.serve.retrieve import HybridRetriever\n", "kofin.eval.rag") == [
        "1: kofin.serve.retrieve ['HybridRetriever']"
    ]
    assert violations("def f():\n    from kofin.serve import respond\n", "kofin.eval.rag") == [
        "2: kofin.serve ['respond']"
    ]
    assert violations("import kofin.merge.run\n", "kofin.training.dpo") == ["1: kofin.merge.run"]
    assert violations("from kofin.serve.index import IndexConfig\n", "kofin.training.fedlora.client") == [
        "1: kofin.serve.index ['IndexConfig']"
    ]
    assert violations("from kofin.data_ko.pii import scrub_pii\n", "kofin.rundir") == [
        "1: kofin.data_ko.pii ['scrub_pii']"
    ]
    # ... and what the rule allows stays allowed.
    assert violations("from kofin.serve import answer_question, build_knowledge_base\n", "kofin.eval.rag") == []
    assert (
        violations(
            "from kofin.data_ko.korean import morpheme_terms\nfrom kofin.rundir import MANIFEST\n", "kofin.serve.index"
        )
        == []
    )
