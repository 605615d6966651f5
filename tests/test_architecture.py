"""The package's shape, checked: which stage may import which, and one home for the run folder's names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gliomaseg.io.nifti import NIFTI_SUFFIX
from gliomaseg.model.run_folder import RunFolder

PACKAGE = Path(__file__).resolve().parent.parent / "gliomaseg"
RUN_FILE_NAMES = {RunFolder.CONFIG, RunFolder.SPLIT, RunFolder.LAST, RunFolder.BEST, RunFolder.RULES, RunFolder.METRICS,
                  RunFolder.CURVES, RunFolder.VALIDATION, RunFolder.TENSORBOARD, RunFolder.MODEL_CARD}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _string_constants(path: Path) -> set[str]:
    """String literals of a file, docstrings left out (they may name files in prose)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


@pytest.mark.parametrize("stage, forbidden", [("inference", ("gliomaseg.training",)),
                                              ("model", ("gliomaseg.training", "gliomaseg.inference")),
                                              ("preparation", ("gliomaseg.training",)),
                                              ("measurement", ("gliomaseg.training", "gliomaseg.inference", "gliomaseg.model"))])
def test_a_stage_does_not_import_a_later_or_parallel_one(stage, forbidden):
    offenders = {f"{path.relative_to(PACKAGE)} imports {module}"
                 for path in (PACKAGE / stage).rglob("*.py") for module in _imports(path) if module.startswith(forbidden)}
    assert not offenders


def test_run_file_names_and_the_nifti_suffix_are_spelled_in_one_place():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        constants = _string_constants(path)
        if path.name != "run_folder.py":
            offenders += [f"{path.relative_to(PACKAGE)}: {name}" for name in sorted(constants & RUN_FILE_NAMES)]
        if path.name != "nifti.py" and NIFTI_SUFFIX in constants:
            offenders.append(f"{path.relative_to(PACKAGE)}: {NIFTI_SUFFIX}")
    assert not offenders


def test_the_checks_see_what_they_look_for():
    """The scanners find an import of training and a run-file literal where there is one."""
    assert "gliomaseg.training.trainer" in _imports(PACKAGE / "cli.py") | _imports(PACKAGE / "demo.py")
    assert RunFolder.METRICS in _string_constants(PACKAGE / "model" / "run_folder.py")


def test_predicting_with_the_packaged_network_does_not_import_monai():
    # Importing MONAI costs ~2 s, more than a whole prediction with the packaged VNet3d: the
    # command line and the prediction path load it only for the networks and patches that need it.
    import subprocess
    import sys

    code = ("import sys\n"
            "from gliomaseg.cli import app\n"
            "from gliomaseg.inference.predictor import load_model, predict\n"
            "load_model(None, 'cpu')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
