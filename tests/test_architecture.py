"""The house rules of docs/architecture.md, checked on the source: which package may import
which, bench/ and workflow/ on public names only, and ruff clean with the project's rules."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "benscale"
#: Modules of the ground floor: facts and helpers, importing nothing of ours but errors.
GROUND = {"cli", "errors", "atomic", "provenance", "bigearthnet", "typed", ""}
STAGES = {"synth", "ingest", "extract", "train", "study", "report"}


def layer(module: str) -> str:
    """``benscale.train.loop`` -> ``train``; ``benscale.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """Every ``benscale...`` module a source imports (top level or inside functions)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("benscale")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("benscale"):
            found.append((node.module, node.lineno))
            # `from benscale import report` imports the package benscale.report
            if node.module == "benscale":
                found += [(f"benscale.{a.name}", node.lineno) for a in node.names
                          if not a.name.startswith("__")]
    return found


def violations(module: str, source: str) -> list[str]:
    """What ``module`` (dotted name) imports against the rule of its layer."""
    own = layer(module)
    out = []
    for target, line in imported_modules(ast.parse(source)):
        dep = layer(target)
        if dep in ("", "errors") or dep == own:
            continue
        if own == "errors" or (own in GROUND and dep != "errors"):
            why = "the ground floor imports nothing of ours but errors"
        elif own == "files" and dep not in GROUND:
            why = "files/ imports only the ground floor"
        elif own in STAGES and dep not in GROUND | {"files"}:
            why = f"a stage imports only the ground floor, files/ and itself, not {dep}"
        elif own == "data":
            why = "package data imports nothing"
        else:
            continue
        out.append(f"{module}:{line}: imports {target}: {why}")
    return out


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def test_every_module_keeps_to_its_layer() -> None:
    found = [v for name, path in modules() for v in violations(name, path.read_text())]
    assert not found, "\n".join(found)
    assert {layer(name) for name, _ in modules()} >= STAGES | {"files"}


def test_the_check_catches_a_stage_importing_another() -> None:
    bad = "from benscale.train.metrics import evaluate\n"
    assert violations("benscale.report.tables", bad) == [
        "benscale.report.tables:1: imports benscale.train.metrics: a stage imports only the "
        "ground floor, files/ and itself, not train"]
    assert violations("benscale.files.run", "import benscale.study.plan\n")
    assert violations("benscale.provenance", "from benscale import files\n")
    assert not violations("benscale.report.tables", "from benscale.files.run import PARTS\n")
    assert _public("benscale.study", "_plan") == "private name"
    assert _public("benscale.study", "machine_record") == "not in benscale.study.__all__"
    assert _public("benscale.study", "plan_points") is None
    assert _public("benscale.train", "world") is None  # a submodule


def test_cli_loads_stages_lazily() -> None:
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    stages = [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module
              and layer(n.module) in STAGES]
    assert not stages, stages


def _public(module: str, name: str) -> str | None:
    """Why ``from module import name`` is not public API (None when it is): a private
    module or name, or a name its module's ``__all__`` leaves out (submodules are fine)."""
    import importlib
    import importlib.util

    if any(part.startswith("_") for part in [*module.split("."), name]):
        return "private name"
    exported = getattr(importlib.import_module(module), "__all__", None)
    if exported is None or name in exported:
        return None
    if importlib.util.find_spec(f"{module}.{name}") is not None:
        return None
    return f"not in {module}.__all__"


def _from_imports(source: str) -> list[tuple[str, str]]:
    tree = ast.parse(source)
    return [(n.module, a.name) for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("benscale")
            for a in n.names]


def test_bench_and_workflow_use_public_names() -> None:
    sources = [*(REPO / "bench").glob("*.py"), *(REPO / "workflow" / "rules").glob("*.smk")]
    bad = []
    for path in sources:
        text = path.read_text()
        if path.suffix == ".smk":  # only its Python import lines
            text = "\n".join(re.findall(r"^(?:from|import) [^\n(]*(?:\([^)]*\))?", text, re.M))
        for module, name in _from_imports(text):
            why = _public(module, name)
            if why:
                bad.append(f"{path.relative_to(REPO)}: {module}.{name}: {why}")
    assert not bad, "\n".join(bad)


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: `make test` installs the test extra")
    proc = subprocess.run([ruff, "check", "src", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    noqa = [f"{p.relative_to(REPO)}:{i}" for d in ("src", "tests", "bench")
            for p in (REPO / d).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"#\s*noqa(?!:\s*[A-Z]+\d)", line)]
    assert not noqa, f"blanket noqa (name the rule): {noqa}"
