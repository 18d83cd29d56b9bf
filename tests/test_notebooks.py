"""notebooks/: each jupytext `.py` and its paired `.ipynb` hold the same code cells, the `.ipynb`
is output-free and opens with its own Colab badge, and every notebook runs headless in tiny mode
(nbclient, the Colab-only cells tagged ``colab`` removed) and writes results that make sense."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

jupytext = pytest.importorskip("jupytext")

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
BADGE = re.compile(
    r"https://colab\.research\.google\.com/github/([\w-]+)/embeddinggemma-jax/blob/main/"
    r"notebooks/([\w.-]+\.ipynb)"
)


def _code_cells(nb) -> list[tuple[str, list[str]]]:
    return [(c.source, c.metadata.get("tags", [])) for c in nb.cells if c.cell_type == "code"]


def _is_colab(cell) -> bool:
    return "colab" in cell.metadata.get("tags", [])


def test_the_three_notebooks_are_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_encode_and_search", "02_finetune_own_jsonl", "03_soup_qat_export"]


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_has_the_same_code_and_no_outputs(py):
    ipynb = py.with_suffix(".ipynb")
    from_py, from_ipynb = jupytext.read(py), jupytext.read(ipynb)
    assert _code_cells(from_py) == _code_cells(from_ipynb), f"run: jupytext --sync {py}"
    raw = json.loads(ipynb.read_text(encoding="utf-8"))
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:1]
    # The first cell is the Colab badge of this very notebook; one install cell, tagged.
    first = from_py.cells[0]
    assert first.cell_type == "markdown"
    assert BADGE.findall(first.source) == [("YOUR-ORG", ipynb.name)]
    colab = [c for c in from_py.cells if _is_colab(c)]
    assert len(colab) == 1 and "pip install" in colab[0].source


def test_readme_links_every_notebook_with_the_same_org():
    text = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    links = BADGE.findall(text)
    assert sorted({name for _, name in links}) == [p.with_suffix(".ipynb").name for p in NOTEBOOKS]
    assert {org for org, _ in links} == {"YOUR-ORG"}
