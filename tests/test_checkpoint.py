"""checkpoint.save_params writes a run directory every reader takes like a training run;
complete_steps lists only finished steps; the errors name the real cause."""

import dataclasses
import inspect
import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import random_params, train_tiny_tokenizer

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig, param_shapes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(ModelConfig, random params, tokenizer path) of a two-layer odd-sized model."""
    root = tmp_path_factory.mktemp("tiny")
    tok = train_tiny_tokenizer(root, inspect.getdoc(json) + "\n" + inspect.getdoc(shutil), 131)
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size, num_layers=2, layer_types=(LOCAL, GLOBAL))
    return cfg, random_params(param_shapes(cfg), 0.1, seed=3), tok.path


def _assert_same(want, got):
    flat = jax.tree_util.tree_flatten_with_path(want)[0]
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for (path, a), b in zip(flat, jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), jax.tree_util.keystr(path))


def test_save_params_reads_like_a_training_run(tiny, tmp_path, monkeypatch):
    cfg, params, tok = tiny
    prompts = {"query": "task: search result | query: ", "document": "title: none | text: "}
    info = checkpoint.describe_model(cfg, prompts=prompts)
    step_dir = checkpoint.save_params(
        tmp_path / "soup",
        7,
        params,
        model_info=info,
        config={"recipe": "uniform"},
        tokenizer=tok,
        meta={"sources": ["a", "b"]},
    )
    assert step_dir == tmp_path / "soup" / "checkpoints" / "7"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == [
        "config",
        "meta",
        "model",
        "params",
    ]
    assert (tmp_path / "soup" / "tokenizer.model").read_bytes() == open(tok, "rb").read()
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    assert meta == {"step": 7, "sources": ["a", "b"]}
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]  # nothing left half-named

    monkeypatch.chdir(tmp_path)
    _assert_same(params, checkpoint.restore_params("soup"))
    embedder = Embedder.from_pretrained("soup", pack_length=None)
    _assert_same(params, jax.device_get(embedder.params))
    assert embedder.prompts == prompts
    assert embedder.config == dataclasses.replace(cfg, scan_layers=True)  # the loader's default
    cfg2, params2, tok2, prompts2 = checkpoint.load_for_inference("soup/checkpoints/7/")
    assert cfg2 == cfg and prompts2 == prompts and tok2 == tmp_path / "soup" / "tokenizer.model"
    _assert_same(params, params2)

    # A second step beside it; the newest is read, an explicit one on request.
    later = jax.tree.map(lambda x: x + 1.0, params)
    checkpoint.save_params("soup", 9, later, model_info=info, tokenizer=tok)
    _assert_same(later, checkpoint.restore_params("soup"))
    _assert_same(params, checkpoint.restore_params("soup", step=7))
    with pytest.raises(UserError, match="step 7 already exists"):
        checkpoint.save_params("soup", 7, params, model_info=info)


def test_complete_steps_ignores_in_progress_folders(tiny, tmp_path):
    cfg, params, tok = tiny
    for step in (2, 4):
        checkpoint.save_params(tmp_path / "run", step, params, model_info=cfg, tokenizer=tok)
    root = tmp_path / "run" / "checkpoints"
    # What a killed or still running Orbax save leaves: the step under a temporary name.
    shutil.copytree(root / "4", root / "6.orbax-checkpoint-tmp-1796160977")
    (root / "8").mkdir()  # a bare folder with a step's name
    want = [(2, root / "2"), (4, root / "4")]
    assert checkpoint.complete_steps(tmp_path / "run") == want
    assert checkpoint.complete_steps(root) == want
    assert checkpoint.resolve_step_dir(tmp_path / "run") == root / "4"
    with pytest.raises(UserError, match="still being written"):
        checkpoint.resolve_step_dir(root / "6.orbax-checkpoint-tmp-1796160977")


def test_a_killed_write_leaves_no_complete_step(tiny, tmp_path):
    cfg, params, tok = tiny
    checkpoint.save_params(tmp_path / "run", 3, params, model_info=cfg, tokenizer=tok)
    root = tmp_path / "run" / "checkpoints"
    os.rename(root / "3", root / "3.orbax-checkpoint-tmp-17")  # killed before Orbax's rename
    assert checkpoint.complete_steps(tmp_path / "run") == []
    with pytest.raises(UserError, match=r"no complete checkpoint yet .*3\.orbax-checkpoint-tmp"):
        checkpoint.restore_params(tmp_path / "run")
    # The rerun writes the step again beside the leftover.
    checkpoint.save_params(tmp_path / "run", 3, params, model_info=cfg, tokenizer=tok)
    _assert_same(params, checkpoint.restore_params(tmp_path / "run"))
