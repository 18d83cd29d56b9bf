"""embeddinggemma_jax.notebook, the notebooks' shared setup: tiny mode and the output folder, the
standard-library finetune data (train JSONL + held-out BEIR task), its tokenizer and the
finetune configs. tests/test_notebooks.py runs the notebooks themselves."""

import json

import jax
import pytest

from embeddinggemma_jax import notebook
from embeddinggemma_jax.eval.tasks import RetrievalTask
from embeddinggemma_jax.text.tokenizer import Tokenizer


@pytest.mark.parametrize(
    "flag,local,tiny",
    [
        ("1", "/ckpt", True),
        ("0", None, False),
        (None, "/ckpt", False),
        (None, None, jax.default_backend() == "cpu"),
    ],
)
def test_setup_mode_model_and_a_fresh_out(tmp_path, monkeypatch, capsys, flag, local, tiny):
    for name, value in [("EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY", flag), ("EMBEDDINGGEMMA_300M", local)]:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("EMBEDDINGGEMMA_JAX_NOTEBOOK_OUT", str(tmp_path))
    (tmp_path / "07" / "run").mkdir(parents=True)  # a previous run's files
    assert notebook.setup("07") == (tiny, local or notebook.MODEL_ID, tmp_path / "07")
    assert list((tmp_path / "07").iterdir()) == []
    assert f"tiny mode: {tiny}" in capsys.readouterr().out


def test_stdlib_finetune_data_holds_one_in_five_out(tmp_path):
    data = notebook.stdlib_finetune_data(tmp_path, ["textwrap", "shutil", "json"])
    assert len(data.pairs) >= 15 and data.held_out == data.pairs[::5]
    assert len(data.train) + len(data.held_out) == len(data.pairs)
    rows = [json.loads(line) for line in data.train_file.read_text().splitlines()]
    assert rows == data.train
    assert {r["query"] for r in rows}.isdisjoint(q for _, q, _ in data.held_out)
    m, q, p = data.pairs[1]
    assert data.train[0] == {"query": q, "positive": p, "title": m}
    assert p.startswith(f"{m}.") and "(" in p and len(q.split()) >= 4
    # The held-out task as the evaluation reads it: query i -> document i.
    task = RetrievalTask.load(data.eval_task, "held_out")
    n = len(data.held_out)
    assert task.qrels == {f"q{i}": {f"d{i}": 1} for i in range(n)}
    assert task.queries == {f"q{i}": q for i, (_, q, _) in enumerate(data.held_out)}
    assert task.corpus == {f"d{i}": (m, p) for i, (m, _, p) in enumerate(data.held_out)}
    # Another seed, another split.
    (tmp_path / "seed2").mkdir()
    other = notebook.stdlib_finetune_data(tmp_path / "seed2", ["textwrap", "shutil", "json"], 2)
    assert sorted(other.pairs) == sorted(data.pairs) and other.held_out != data.held_out


def test_tiny_tokenizer_learns_the_texts(tmp_path):
    texts = [f"the function number {i} sorts a list of {i} items" for i in range(40)]
    path = notebook.tiny_tokenizer(texts + notebook.FINETUNE_PROMPTS, tmp_path, 120)
    assert path == tmp_path / "tokenizer.model"
    tokenizer = Tokenizer(path)
    assert (tokenizer.pad_id, tokenizer.bos_id) == (0, 2)
    (ids,) = tokenizer.encode(["sorts a list"])
    assert 0 < len(ids) <= 6  # whole words learned, not single characters


def test_finetune_configs(tmp_path):
    train_file = tmp_path / "train.jsonl"
    tiny = notebook.finetune_config(True, "hub/model", train_file, tmp_path / "t.model")
    assert (tiny.tokenizer, tiny.init_from) == (str(tmp_path / "t.model"), "")
    assert (tiny.num_steps, tiny.data.global_batch_size, tiny.checkpoint.every) == (60, 16, 0)
    assert tiny.random_init.residual_scale == 0.0  # from scratch
    assert [d["path"] for d in tiny.data.datasets] == [str(train_file)]
    tiny.lock()
    resumed = notebook.finetune_config(True, "hub/model", train_file, "t.model", "run", 10)
    assert (resumed.init_from, resumed.num_steps) == ("run", 10)
    assert resumed.random_init.residual_scale is None  # a checkpoint's weights are kept as they are
    full = notebook.finetune_config(False, "hub/model", train_file)
    assert (full.init_from, full.num_steps, full.data.global_batch_size) == ("hub/model", 100, 64)
    assert full.checkpoint.every == 0 and full.data.doc_max_length == 64
    assert notebook.finetune_config(False, "hub/model", train_file, init_from="soup").init_from == (
        "soup"
    )
