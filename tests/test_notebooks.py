"""Every tutorial in notebooks/ runs from top to bottom."""

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
    ns = runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert "Traceback" not in out
    assert ns  # the script defined its variables
