"""notebooks/: each jupytext `.py` and its paired `.ipynb` hold the same code cells, the `.ipynb`
is output-free and opens with its own Colab badge, and every notebook runs headless in tiny mode
(nbclient, the Colab-only cells tagged ``colab`` removed) and writes results that make sense."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

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


def _check_01(r):
    assert r["tiny"] is True and r["num_docs"] >= 30
    assert all(abs(n - 1) < 1e-4 for n in r["query_norms"])
    assert r["dims"] == [40, 20, 10]
    assert sorted(r["top1"]) == ["10", "20", "40"]
    assert all(len(v) == len(r["query_norms"]) for v in r["top1"].values())
    assert all(-1 <= s <= 1 for s in r["top_scores"])


def _check_02(r):
    assert r["tiny"] is True and r["devices"] >= 1 and r["steps"] == 60
    assert r["train_pairs"] > 4 * r["held_out_pairs"] - 5 > 0
    loss = r["train_loss"]
    assert len(loss) == 6 and loss[-1] < loss[0]
    before, after = r["ndcg_at_10"]["before"], r["ndcg_at_10"]["after"]
    assert sorted(before) == sorted(after) == ["12", "24", "40"]
    assert all(0 <= v <= 1 for v in [*before.values(), *after.values()])
    assert after["40"] > before["40"]  # the finetune learns something that transfers


def _check_03(r):
    assert r["tiny"] is True and r["soup_num_kept"] == 2 and r["qat_steps"] == 10
    cos = r["cosine_to_float"]
    assert abs(cos["float"] - 1) < 1e-5
    # q8_0 rounds less than q4_0; both stay close to the float embeddings but not identical.
    assert 1 - 1e-6 > cos["ptq_q8_0"] > cos["ptq_q4_0"] > 0.5
    assert 0.5 < cos["qat_q8_0"] < 1 - 1e-6
    for name in ("ingredient0", "ingredient1", "soup", "ptq_q8_0", "ptq_q4_0", "qat_q8_0"):
        assert all(0 <= v <= 1 for v in r["ndcg_at_10"][name].values()), name
    assert r["ndcg_at_10"]["soup"] != r["ndcg_at_10"]["ingredient0"]
    assert r["gguf_bytes"]["q8_0"] < r["gguf_bytes"]["f32"]
    assert "Q8_0" in r["gguf_tensor_types"]["q8_0"]
    assert "Q8_0" not in r["gguf_tensor_types"]["f32"]


CHECKS = {"01": _check_01, "02": _check_02, "03": _check_03}


@pytest.mark.slow  # about 25-40 s each on a 2-core CPU
@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_headless_in_tiny_mode(py, tmp_path, monkeypatch):
    nb = jupytext.read(py)
    nb.cells = [c for c in nb.cells if not _is_colab(c)]  # Colab's install and login
    monkeypatch.setenv("EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("EMBEDDINGGEMMA_JAX_NOTEBOOK_OUT", str(tmp_path))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    key = py.stem[:2]
    CHECKS[key](json.loads((tmp_path / key / "results.json").read_text()))
