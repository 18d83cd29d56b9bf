"""Every loader takes a run directory the way users write it: relative to the working directory,
with ``~``, with a trailing slash, its ``checkpoints/`` folder or one step folder; and the errors
name the real cause (a missing folder, no complete checkpoint, a missing step, another shape)."""

import json

import jax
import numpy as np
import pytest
from conftest import random_params
from train.trainlib import records, tiny_config, write_beir

from embeddinggemma_jax import checkpoint, cli, embed, evaluate
from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig, param_shapes
from embeddinggemma_jax.text import Tokenizer
from embeddinggemma_jax.train.contrastive import ContrastiveTask

# How users name the run saved at <cwd>/run (HOME is <cwd>); step 4 is its newest.
FORMS = [
    "run",
    "run/",
    "./run",
    "~/run",
    "run/checkpoints",
    "run/checkpoints/",
    "run/checkpoints/4",
]
CLI_FORMS = ["run", "run/", "~/run", "run/checkpoints", "run/checkpoints/4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(cwd, {step: params}, tokenizer path): a parameters-only run with steps 2 and 4 of a
    tiny model using trainlib's tokenizer, in <cwd>/run."""
    cwd = tmp_path_factory.mktemp("work")
    config = tiny_config(cwd)
    tok = Tokenizer(config.tokenizer)
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size, num_layers=2, layer_types=(LOCAL, GLOBAL))
    steps = {s: random_params(param_shapes(cfg), 0.1, seed=s) for s in (2, 4)}
    for s, params in steps.items():
        checkpoint.save_params(cwd / "run", s, params, model_info=cfg, tokenizer=tok.path)
    return cwd, steps, tok.path


@pytest.fixture
def at(run, monkeypatch):
    """The run's directory as the working directory and as HOME."""
    cwd = run[0]
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(cwd))
    return run


def _same(want, got):
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_as_path():
    assert str(checkpoint.as_path("gs://bucket/runs/a/")) == "gs://bucket/runs/a"
    assert "://" in str(checkpoint.as_path("gs://bucket/runs/a/checkpoints/3"))


@pytest.mark.parametrize("form", FORMS)
def test_library_loaders(at, form):
    cwd, steps, tok = at
    step_dir = cwd / "run" / "checkpoints" / "4"
    assert checkpoint.resolve_step_dir(form) == step_dir
    _same(steps[4], checkpoint.restore_params(form))
    cfg, params, tokenizer, _ = checkpoint.load_for_inference(form)
    _same(steps[4], params)
    assert tokenizer == cwd / "run" / "tokenizer.model"
    embedder = Embedder.from_pretrained(form)
    _same(steps[4], jax.device_get(embedder.params))
    assert embedder.config.num_layers == cfg.num_layers == 2


def test_an_explicit_step(at):
    _, steps, _ = at
    _same(steps[2], checkpoint.restore_params("run", step=2))
    _same(steps[2], checkpoint.restore_params("~/run/checkpoints/2/"))
    _same(steps[2], checkpoint.load_for_inference("run/", step=2)[1])


@pytest.mark.parametrize("form", ["run", "~/run/", "run/checkpoints", "run/checkpoints/4/"])
def test_init_from_and_teacher_path(at, form):
    cwd, steps, _ = at
    config = tiny_config(cwd, **{"init_from": form, "teacher.path": form, "model.preset": None})
    task = ContrastiveTask(config)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, task.param_shapes())
    _same(steps[4], task.initial_params(jax.random.key(0), shardings))
    _same(steps[4], task.teacher_params)


def _embed(model, tmp_path, name):
    texts = tmp_path / "texts.txt"
    texts.write_text("sort the list of x\nparse the header\n")
    out = tmp_path / f"{name}.npy"
    embed.main(["--model", model, "--input", str(texts), "--output", str(out), "--no-progress"])
    return np.load(out)


def test_embed_and_evaluate_clis(at, tmp_path, compilation_cache, capsys):
    cwd, steps, tok = at
    task = write_beir(tmp_path / "task", records(12))
    want = Embedder.from_pretrained(cwd / "run" / "checkpoints" / "4").encode(
        ["sort the list of x", "parse the header"]
    )
    scores = []
    for i, form in enumerate(CLI_FORMS):
        np.testing.assert_allclose(_embed(form, tmp_path, f"e{i}"), want, rtol=1e-5, atol=1e-6)
        report = evaluate.main(["--model", form, "--tasks", str(task), "--dims", "40,12"])
        results = {t: r["results"] for t, r in report["tasks"].items()}
        scores.append(json.dumps(results, sort_keys=True))
    assert len(set(scores)) == 1  # the same checkpoint each time


def _fails(argv, capsys, main=embed.main) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_errors_name_the_cause(at, tmp_path, capsys):
    cwd, steps, _ = at
    with pytest.raises(UserError, match=r"^nothing: no such folder \(/"):
        checkpoint.restore_params("nothing")
    with pytest.raises(UserError, match=r"no step 9 in .*complete steps: 2, 4"):
        checkpoint.restore_params("run", step=9)
    with pytest.raises(UserError, match=r"no step 9 in .*complete steps: 2, 4"):
        Embedder.from_pretrained("run/checkpoints/9")
    (cwd / "pending" / "checkpoints" / "6.orbax-checkpoint-tmp-123").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no complete checkpoint yet .*6\.orbax-checkpoint-tmp"):
        Embedder.from_pretrained("pending")
    (cwd / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint here"):
        checkpoint.load_for_inference("empty/")
    other = ModelConfig.tiny(vocab_size=7, num_layers=2, layer_types=(LOCAL, GLOBAL))
    with pytest.raises(
        UserError,
        match=r"parameter encoder/embedder/embedding is \(\d+, \d+\) in "
        r"the checkpoint but \(7, \d+\) in this model",
    ):
        checkpoint.restore_params("run", param_shapes(other))

    texts = tmp_path / "t.txt"
    texts.write_text("x\n")
    out = str(tmp_path / "o.npy")
    err = _fails(["--model", "run/checkpoints/9", "--input", str(texts), "--output", out], capsys)
    assert err.startswith("error: ") and "no step 9" in err
    err = _fails(["--model", "pending", "--input", str(texts), "--output", out], capsys)
    assert "no complete checkpoint yet" in err
    task = str(write_beir(tmp_path / "task", records(4)))
    argv = ["--model", "run/checkpoints/7", "--tasks", task]
    err = _fails(argv, capsys, cli.command(evaluate.main))
    assert err.startswith("error: run/checkpoints/7: no step 7 in ")
