"""End to end: a 3-step run starting from a sentence-transformers folder written by
`Embedder.save_pretrained`, periodic evaluation and the best checkpoint, loading the workdir with
`Embedder.from_pretrained`, and a later stage starting from the Orbax checkpoint (params only)."""

import json

import jax
import numpy as np
import pytest
import trainlib

from embeddinggemma_jax import Embedder, checkpoint
from embeddinggemma_jax.eval import embedder_encode_fn, get_task
from embeddinggemma_jax.evaluate import main as evaluate_main
from embeddinggemma_jax.model import ModelConfig, init_params
from embeddinggemma_jax.text import Tokenizer
from embeddinggemma_jax.train.trainer import Trainer


def test_sentence_transformers_folder_to_orbax_and_back(tmp_path, cheap_compile):
    config = trainlib.tiny_config(
        tmp_path,
        num_steps=3,
        with_eval=True,
        **{"eval.every": 2, "eval.at_start": True, "checkpoint.every": 0},
    )
    tokenizer = Tokenizer(config.tokenizer)
    model_cfg = ModelConfig.tiny(vocab_size=tokenizer.vocab_size)
    start = init_params(model_cfg, jax.random.key(7))
    folder = Embedder(model_cfg, start, tokenizer, max_length=48).save_pretrained(tmp_path / "st")
    assert (folder / "config.json").exists() and (folder / "tokenizer.model").exists()

    with config.unlocked():
        config.init_from = str(folder)
        config.tokenizer = ""  # taken from the folder
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.task.model_config.head_dims == model_cfg.head_dims
    first = trainer.restore_or_init()
    assert first == 0
    for a, b in zip(trainlib.leaves(trainer.state.params), trainlib.leaves(start)):
        np.testing.assert_array_equal(a, b)  # starts from the folder's weights
    summary = trainer.fit()
    trainer.close()
    assert summary["step"] == 3
    losses = [row["loss"] for row in summary["history"]["train"]]
    assert len(losses) == 3 and all(np.isfinite(losses))
    evals = summary["history"]["eval"]
    assert [e["step"] for e in evals] == [0, 2, 3]
    assert all(0.0 <= e["ndcg_at_10"] <= 1.0 for e in evals)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"tokens_per_s", "learning_rate", "grad_norm"} <= set(lines[-2])

    # The workdir loads for inference (latest step), and encodes.
    trained = trainlib.leaves(trainer.state.params)
    embedder = Embedder.from_pretrained(tmp_path / "run")
    for a, b in zip(trainlib.leaves(embedder.params), trained):
        np.testing.assert_array_equal(a, b)
    q = embedder.encode_query(["Sort the list of x."])
    d = embedder.encode_document(["def sort_list(x):\n    return sorted(x)"], titles=["mod0"])
    assert q.shape == d.shape == (1, model_cfg.output_dim)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=1e-5)
    assert (tmp_path / "run" / "tokenizer.model").exists()

    # `evaluate` on the trained workdir gives what the in-memory model gives on the same task.
    dim = model_cfg.output_dim
    report = evaluate_main(
        ["--model", str(tmp_path / "run"), "--tasks", config.eval.task, "--dims", str(dim),
         "--output", str(tmp_path / "eval.json")]
    )  # fmt: skip
    task = get_task(config.eval.task)
    direct = task.evaluate(embedder_encode_fn(embedder), [dim])[dim]
    assert report["tasks"][task.name]["results"][str(dim)] == pytest.approx(direct, abs=1e-6)
    assert (tmp_path / "eval.json").exists()

    # Best by nDCG@10 is a kept checkpoint with metrics; a step folder loads directly.
    best = checkpoint.resolve_step_dir(tmp_path / "run", best=True)
    best_ndcg = max(e["ndcg_at_10"] for e in evals if e["step"] > 0)
    meta = json.loads((best / "meta" / "metadata").read_text())
    assert meta["metrics"]["ndcg_at_10"] == best_ndcg
    cfg, params, tok_file, prompts = checkpoint.load_for_inference(best)
    assert cfg.head_dims == model_cfg.head_dims and tok_file.name == "tokenizer.model"
    assert prompts["query"] == embedder.prompts["query"]

    # A later stage: params from the Orbax workdir, fresh optimizer, its own step count.
    with config.unlocked():
        config.init_from = str(tmp_path / "run")
        config.eval.task = ""
    stage2 = Trainer(config, tmp_path / "stage2")
    assert stage2.restore_or_init() == 0
    for a, b in zip(trainlib.leaves(stage2.state.params), trained):
        np.testing.assert_array_equal(a, b)
    stage2.close()
