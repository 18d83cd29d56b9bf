"""The causal-LM stage (configs/causal_lm.py:tiny) and the chain it starts: causal_lm run ->
UL2 (init_from = that run: T5Gemma's balanced init) -> contrastive (init_from = the UL2 run: its
adapted encoder and a fresh head)."""

from pathlib import Path

import jax
import numpy as np
import pytest
import trainlib

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.interop.huggingface import load_decoder_only
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig
from embeddinggemma_jax.train.causal_lm import (
    CausalLMBatches,
    CausalLMTask,
    causal_lm_logits,
    causal_lm_param_shapes,
    causal_lm_rows,
)
from embeddinggemma_jax.train.trainer import Trainer
from embeddinggemma_jax.train.ul2 import UL2Task, ul2_extra_rows


def _causal_config(tmp: Path, rows=None, **overrides):
    rows = trainlib.records(48) if rows is None else rows
    return trainlib.load_config(
        "causal_lm",
        "tiny",
        tokenizer=str(trainlib.train_sentencepiece(tmp / "spm")),
        train_data=str(trainlib.write_jsonl(tmp / "data" / "text.jsonl", rows)),
        **{"causal_lm.text_fields": ("query", "positive"), **overrides},
    )


def _assert_same(a, b, what):
    a, b = jax.tree.map(np.asarray, jax.device_get(a)), jax.tree.map(np.asarray, jax.device_get(b))
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=what)


def test_logits_are_causal_and_packing_keeps_texts_apart():
    cfg = ModelConfig.tiny(
        bidirectional=False, num_layers=2, layer_types=(LOCAL, GLOBAL), sliding_window=6
    )
    params = jax.tree.map(
        lambda s: np.random.default_rng(0).normal(0, 0.3, s.shape).astype(np.float32),
        causal_lm_param_shapes(cfg),
    )
    rng = np.random.default_rng(1)
    a, b = rng.integers(4, cfg.vocab_size, 7), rng.integers(4, cfg.vocab_size, 9)

    def logits(seqs, length=16, pack=True, rows=1):
        batch, placed = causal_lm_rows(seqs, rows, length, pack=pack)
        assert placed == len(seqs)
        return np.asarray(causal_lm_logits(cfg, params, *batch.values()))

    alone = logits([b])[0, :9]
    changed = b.copy()
    changed[5] = (changed[5] + 1) % cfg.vocab_size
    after = logits([changed])[0, :9]
    np.testing.assert_array_equal(after[:5], alone[:5])  # earlier positions cannot see token 5
    assert np.abs(after[5:] - alone[5:]).max() > 1e-3
    packed = logits([a, b])
    np.testing.assert_allclose(packed[0, 7:16], alone, atol=2e-5)  # b after a: as if alone
    np.testing.assert_allclose(packed[0, :7], logits([a])[0, :7], atol=2e-5)


def test_batches_resume_exactly(tmp_path):
    for pack in (False, True):
        task = CausalLMTask(_causal_config(tmp_path, **{"causal_lm.pack": pack}))
        assert task.model_config.vocab_size == task.tokenizer.vocab_size + task.extra_rows
        want = trainlib.assert_iterator_resumes(task, f"pack={pack}")
        tokens, segments = want[0]["tokens"], want[0]["segments"]
        starts = (segments > 0) & (np.diff(segments, axis=1, prepend=0) != 0)
        assert np.all(tokens[starts] == task.tokenizer.bos_id)  # every text starts with BOS
        assert np.all(segments.max(1) > 1) if pack else np.all(segments.max(1) == 1)


def test_rows_place_in_order():
    seqs = [np.arange(n) + 1 for n in (3, 4, 2, 5, 1)]
    batch, placed = causal_lm_rows(seqs, 2, 6, pack=True)
    assert placed == 3  # [3] + no room for 4 -> row 2: [4, 2]; 5 fits nowhere
    np.testing.assert_array_equal(batch["segments"], [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 2, 2]])
    np.testing.assert_array_equal(batch["positions"][1], [0, 1, 2, 3, 0, 1])
    _, placed = causal_lm_rows(seqs, 2, 6, pack=False)
    assert placed == 2
    it = CausalLMBatches(
        lambda i: ((j, np.arange(j % 4) + 5) for j in range(i, 1000)), 2, 6, bos_id=2, eos_id=1
    )
    np.testing.assert_array_equal(next(it)["tokens"][1], [2, 5, 1, 0, 0, 0])  # BOS ids EOS
    assert it.get_state() == {"index": 2}


# One train step shape for both trainings (the compilation cache then compiles it once).
LOSS_RUN = {"num_steps": 12, "checkpoint.every": 0}


def test_loss_decreases_on_repeated_text(tmp_path):
    text = {"query": "Sort the list of x.", "positive": "def sort_list(x):\n    return sort(x)"}
    config = _causal_config(tmp_path, rows=[text] * 8, **LOSS_RUN, **{"log.every": 1})
    trainer = Trainer(config, tmp_path / "run")
    summary = trainer.fit()
    trainer.close()
    rows = summary["history"]["train"]
    losses, accuracy = [r["loss"] for r in rows], [r["accuracy"] for r in rows]
    assert len(losses) == 12 and all(np.isfinite(losses))
    # Tied logits of a 0.02-std table start near log V and fall slowly; the argmax learns fast.
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.5, losses
    assert accuracy[0] < 0.5 < 0.8 < accuracy[-1], accuracy


def test_chain_causal_lm_then_ul2_then_contrastive(tmp_path):
    causal = _causal_config(tmp_path, **LOSS_RUN)  # the step the loss test compiled
    lm = Trainer(causal, tmp_path / "causal_lm")
    summary = lm.fit()
    lm.close()
    assert summary["step"] == causal.num_steps
    assert all(np.isfinite(row["loss"]) for row in summary["history"]["train"])
    decoder = jax.device_get(lm.state.params)

    # load_decoder_only reads the run (run dir or step folder) like a Hugging Face folder.
    cfg, params = load_decoder_only(tmp_path / "causal_lm")
    assert not cfg.bidirectional and cfg.vocab_size == lm.task.model_config.vocab_size
    _assert_same(params, decoder, "load_decoder_only(run)")
    step_dir = checkpoint.resolve_step_dir(tmp_path / "causal_lm")
    _assert_same(load_decoder_only(step_dir)[1], decoder, "load_decoder_only(step)")
    assert ul2_extra_rows(lm.task.tokenizer, 48, 32) <= lm.task.extra_rows

    # UL2 from the run: tokenizer defaults to the run's; balanced T5Gemma init.
    ul2 = trainlib.load_config(
        "ul2_adaptation",
        "tiny",
        init_from=str(tmp_path / "causal_lm"),
        tokenizer="",
        train_data=causal.train_data,
        num_steps=1,
        **{"ul2.text_fields": ("query", "positive"), "checkpoint.every": 0},
    )
    adapt = Trainer(ul2, tmp_path / "ul2")
    assert isinstance(adapt.task, UL2Task)
    adapt.restore_or_init()
    start = adapt.state.params
    _assert_same(start["encoder"], decoder, "UL2 encoder = the causal LM")
    for i in range(cfg.num_layers):
        layer = start["decoder"][f"layer_{i}"]
        _assert_same(layer["attn"], decoder[f"layer_{i}"]["attn"], f"decoder self-attn {i}")
        _assert_same(layer["cross_attn"], decoder[f"layer_{i}"]["attn"], f"cross-attn {i}")
    adapt.fit()
    adapt.close()
    adapted = jax.device_get(adapt.state.params["encoder"])
    assert any(np.any(a != b) for a, b in zip(trainlib.leaves(adapted), trainlib.leaves(decoder)))

    # Contrastive pre-finetuning from the UL2 run: its encoder, a fresh head (of the shape
    # config.model.head_dims asks for), its tokenizer. (Training from an adapted encoder:
    # test_ul2_task.py.)
    stage = trainlib.tiny_config(tmp_path, **{"model.head_dims": (32, 24)})
    with stage.unlocked():
        stage.init_from = str(tmp_path / "ul2")
        stage.tokenizer = ""
    pre = Trainer(stage, tmp_path / "prefinetune")
    pre.restore_or_init()
    _assert_same(pre.state.params["encoder"], adapted, "contrastive encoder = UL2 encoder")
    embedder = pre.task.model_config
    assert embedder.bidirectional and embedder.head_dims == (32, 24)
    assert embedder.matryoshka_dims == (24, 12)
    assert [w.shape for w in trainlib.leaves(pre.state.params["head"])] == [(48, 32), (32, 24)]
    assert checkpoint.file_sha256(pre.task.tokenizer.path) == checkpoint.file_sha256(
        causal.tokenizer
    )
    pre.close()


def test_wrong_runs_fail_in_one_line(tmp_path):
    causal = _causal_config(tmp_path, **{"causal_lm.extra_rows": 0, "model.num_layers": 1})
    task = CausalLMTask(causal)  # a run of it without training: its export info and params
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), task.param_shapes())
    checkpoint.save_params(
        tmp_path / "causal_lm", 1, params, model_info=task.export_info(), tokenizer=causal.tokenizer
    )
    ul2 = trainlib.load_config(
        "ul2_adaptation",
        "tiny",
        init_from=str(tmp_path / "causal_lm"),
        train_data=causal.train_data,
        **{"ul2.text_fields": ("query", "positive")},
    )
    with pytest.raises(ValueError, match=r"causal_lm\.extra_rows >= 11"):
        UL2Task(ul2)
    stage = trainlib.tiny_config(tmp_path, num_steps=1)
    with stage.unlocked():
        stage.init_from = str(tmp_path / "causal_lm")
    with pytest.raises(ValueError, match="no embedding model and no UL2 encoder"):
        Trainer(stage, tmp_path / "bad")
