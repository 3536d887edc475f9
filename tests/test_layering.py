"""The packages' direction (docs/DESIGN.md): each imports only the project packages below it.

Read from the source (every import statement, top-level or inside a function), so the test
needs no import of the packages themselves.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"vlm", "generation", "chat", "worlds", "training", "benchmarks", "app", "tests"}


def project_imports(folder: str) -> dict[str, set[str]]:
    """Project package -> the files under `folder` that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(("folder", "allowed"), [
    ("vlm", {"vlm"}),
    ("worlds", {"worlds", "vlm"}),
    ("generation", {"generation", "vlm"}),
    ("benchmarks/evaluation", {"benchmarks", "generation", "vlm", "worlds"}),
])
def test_a_package_imports_only_what_is_below_it(folder, allowed):
    imports = project_imports(folder)
    assert {package: files for package, files in imports.items() if package not in allowed} == {}


def test_the_benchmarks_import_no_training_module():
    """Those that measure training run it as a person does, by its command lines
    (`python -m training.train`, `training.build_data`, `training.data validate`) in child
    processes; data they write themselves goes through `worlds/`."""
    imports = project_imports("benchmarks")
    assert imports.get("training", set()) == set()
    assert set(imports) <= {"benchmarks", "app", "chat", "generation", "vlm", "worlds"}


def test_a_light_module_does_not_import_the_model_through_its_package():
    """Package exports load on first use (vlm/lazy_exports.py): saving a conversation, as the
    save-crash children do, needs neither transformers nor peft (the README test uses the exports)."""
    code = "import sys, chat.conversation; print([m for m in ('transformers', 'peft') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
