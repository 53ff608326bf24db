"""The package's layering: the import-linter contracts in pyproject.toml, and no private names across modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vqdna"


def test_import_contracts_are_kept(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "7 kept, 0 broken" in report, report


def test_contracts_fail_on_a_forbidden_import(tmp_path, monkeypatch, capsys):
    """The contracts really bite: a copy of the package whose tokenizer imports the language model breaks two."""
    copy = tmp_path / "vqdna"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    folder = copy / "tokenizer" / "folder.py"
    folder.write_text(folder.read_text() + "\nfrom vqdna.lm.modeling import VqdnaModel  # noqa\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "vqdna" or m.startswith("vqdna.")]:
        monkeypatch.delitem(sys.modules, name)
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 1, report
    assert "Tokenizers never import the language model BROKEN" in report.replace("\n", " ")
    assert "No import cycles, at any depth BROKEN" in report.replace("\n", " ")


def _private_imports(path: Path) -> list[str]:
    """``from vqdna.x import _name`` lines: a private helper used from another module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vqdna"):
            found += [f"{path.relative_to(REPO)}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return found


@pytest.mark.parametrize("folder", ["vqdna", "benchmarks"])
def test_no_module_imports_another_modules_private_names(folder):
    found = [line for path in sorted((REPO / folder).rglob("*.py")) for line in _private_imports(path)]
    assert not found, "private names imported across modules (give them a public home):\n" + "\n".join(found)


def test_no_module_shadows_the_standard_library():
    shadowing = sorted(
        str(path.relative_to(REPO)) for path in PACKAGE.rglob("*.py") if path.stem in sys.stdlib_module_names
    )
    assert not shadowing, f"modules named like standard-library modules: {shadowing}"
