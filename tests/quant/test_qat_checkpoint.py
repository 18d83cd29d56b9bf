"""A QAT run (model.quant set while training) writes a normal float checkpoint: loading it gives
the float model unless a scheme is asked for, and evaluate / export treat it like any run."""

import sys
from pathlib import Path

import gguf
import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import trainlib  # noqa: E402

from embeddinggemma_jax import Embedder, checkpoint  # noqa: E402
from embeddinggemma_jax.eval import embedder_encode_fn, get_task  # noqa: E402
from embeddinggemma_jax.evaluate import main as evaluate_main  # noqa: E402
from embeddinggemma_jax.export import export  # noqa: E402
from embeddinggemma_jax.quant.params import quantized_params  # noqa: E402
from embeddinggemma_jax.train.trainer import Trainer  # noqa: E402

SCHEME = "q8_0"
# Contraction dims divisible by GGUF's block of 32, 5 local + 1 global layers (gemma-embedding).
SHAPE = {"model.embed_dim": 64, "model.head_dim": 32, "model.mlp_dim": 96,
         "model.num_layers": 6, "model.head_dims": (96, 64), "model.matryoshka_dims": (64, 32)}  # fmt: skip
TEXTS = ["Sort the list of x.", "def parse_file(x):\n    return parse(file(x))", "merge tables"]


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qat")
    config = trainlib.tiny_config(
        tmp, num_steps=2, **{"model.quant": SCHEME, "checkpoint.every": 0}, **SHAPE
    )
    trainer = Trainer(config, tmp / "run")
    assert trainer.task.model_config.quant == SCHEME  # it trains the fake-quantized forward
    trainer.restore_or_init()
    start = jax.device_get(trainer.state.params)
    trainer.fit()
    trainer.close()
    trained = jax.device_get(trainer.state.params)
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(trained))]  # fmt: skip
    assert any(moved)  # the straight-through gradient reaches the float weights
    task_dir = trainlib.write_beir(tmp / "beir", trainlib.records()[:12])
    return tmp / "run", trained, str(task_dir)


def _equal_trees(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_qat_checkpoint_loads_as_the_float_model(qat_run):
    run, trained, _ = qat_run
    _equal_trees(checkpoint.restore_params(checkpoint.resolve_step_dir(run)), trained)
    # The training config's scheme is not carried into inference: quant is the caller's choice.
    plain = Embedder.from_pretrained(run)
    assert plain.config.quant is None
    _equal_trees(jax.device_get(plain.params), trained)

    quantized = Embedder.from_pretrained(run, quant=SCHEME)
    assert quantized.config.quant == SCHEME
    _equal_trees(jax.device_get(quantized.params), trained)  # quantized in the forward only
    dequantized = Embedder(
        plain.config,
        quantized_params(trained, plain.config, SCHEME),
        plain.tokenizer,
        prompts=plain.prompts,
        max_length=plain.max_length,
    )
    q = quantized.encode(TEXTS)
    np.testing.assert_allclose(q, dequantized.encode(TEXTS), atol=1e-6)
    assert np.abs(q - plain.encode(TEXTS)).max() > 1e-4


def test_evaluate_takes_a_qat_run(qat_run):
    run, _, task_dir = qat_run
    quantized = Embedder.from_pretrained(run, quant=SCHEME)
    dim = quantized.config.output_dim

    args = ["--model", str(run), "--tasks", task_dir, "--dims", str(dim), "--quant", SCHEME]
    got = evaluate_main(args)["tasks"]
    task = get_task(task_dir)
    direct = task.evaluate(embedder_encode_fn(quantized), [dim])[dim]
    assert got[task.name]["results"][str(dim)] == pytest.approx(direct, abs=1e-6)


def test_export_takes_a_qat_run(qat_run, tmp_path):
    run, trained, _ = qat_run
    quantized = Embedder.from_pretrained(run, quant=SCHEME)

    # The sentence-transformers export holds the weights the quantized forward computes with.
    folder = export(str(run), "sentence-transformers", SCHEME, tmp_path / "st", progress=False)
    reloaded = Embedder.from_pretrained(folder)
    assert reloaded.config.quant is None
    np.testing.assert_allclose(reloaded.encode(TEXTS), quantized.encode(TEXTS), atol=1e-6)

    # The GGUF export stores the same Q8_0 blocks (checked on the token embedding).
    path = export(str(run), "gguf", SCHEME, tmp_path / "m.gguf", progress=False)
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    table = tensors["token_embd.weight"]
    assert table.tensor_type == gguf.GGMLQuantizationType.Q8_0
    stored = gguf.quants.dequantize(np.asarray(table.data), table.tensor_type)
    expected = quantized_params(trained, quantized.config, SCHEME)["encoder"]["embedder"]
    np.testing.assert_array_equal(stored, expected["embedding"][: stored.shape[0]])


def test_a_stage_started_from_a_qat_run_trains_in_float(qat_run, tmp_path):
    run, _, _ = qat_run
    config = trainlib.tiny_config(tmp_path, num_steps=1, **{"checkpoint.every": 0})
    with config.unlocked():
        config.init_from = str(run)
        config.tokenizer = ""  # the run's
    trainer = Trainer(config, tmp_path / "next")
    try:
        assert trainer.task.model_config.quant is None  # quant is chosen per stage, not inherited
    finally:
        trainer.close()
