"""Every tutorial notebook executes top to bottom without an error, within its time budget.

Runs a copy of tutorials/ in a temporary folder, so the committed notebooks (and their
outputs) are never rewritten. New notebooks in tutorials/ are picked up automatically.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"


def _load_runner():
    spec = importlib.util.spec_from_file_location("tutorials_run", TUTORIALS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_runner()
NOTEBOOKS = run.notebooks()


def test_tutorials_exist():
    assert NOTEBOOKS, f"no notebooks found in {TUTORIALS}"


@pytest.mark.notebook
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebook_executes(name, tmp_path):
    pytest.importorskip("nbclient", reason="executing notebooks needs nbclient")
    pytest.importorskip("ipykernel", reason="executing notebooks needs ipykernel")
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    copy = tmp_path / "tutorials"
    shutil.copytree(
        TUTORIALS, copy, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    )
    notebook = copy / name
    try:
        seconds = run.execute(notebook, budget_s=run.BUDGET_S)
    except CellTimeoutError as e:
        pytest.fail(f"{name} did not finish within {run.BUDGET_S} s: {e}")
    except CellExecutionError as e:
        pytest.fail(f"{name} raised in a cell:\n{e}")
    assert seconds < run.BUDGET_S, f"{name} took {seconds:.0f} s, budget {run.BUDGET_S} s"
