"""Every notebook executes top to bottom as a real Jupyter notebook (jupytext -> nbclient).

Notebooks live as jupytext percent scripts (`notebooks/*.py`), so they diff cleanly and also run
as plain Python. Here each is converted to .ipynb and executed in a fresh ipykernel.
"""

import os
from pathlib import Path

import pytest
from conftest import require

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


# Notebooks that must be present (a subset: any other notebooks/*.py also runs below).
REQUIRED = {"01_encoder_tour.py", "linear_attention.py", "rope_2d.py", "flops.py",
            "analytic_logreg.py", "wobert.py", "simcse_whitening.py", "theseus.py",
            "clue.py", "unilm.py"}


# Notebooks that read XLA's compiled programs (cost and memory analysis, HLO) run optimised.
READS_COMPILED_PROGRAMS = {"flops.py", "linear_attention.py", "theseus.py"}


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found"
    missing = REQUIRED - {p.name for p in NOTEBOOKS}
    assert not missing, f"missing notebooks: {sorted(missing)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    jupytext = require("jupytext")
    nbformat = require("nbformat")
    NotebookClient = require("nbclient").NotebookClient
    require("ipykernel")  # the "python3" kernel the client starts

    first = path.read_text(encoding="utf-8")
    assert "Run: `" in first, f"{path.name} must start by stating the command that runs it"
    nb = jupytext.read(path)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if path.name not in READS_COMPILED_PROGRAMS:
        # XLA's optimisation passes dominate these toy notebooks' CPU time (conftest.fast_compile)
        monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(nb, tmp_path / (path.stem + ".ipynb"))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    assert os.environ.get("JAX_PLATFORMS") == "cpu"
