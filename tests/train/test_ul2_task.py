"""The UL2 stage in the generic Trainer (configs/ul2_adaptation.py:tiny), then the hand-off:
extract_encoder from the workdir -> sentence-transformers folder -> a contrastive run from it."""

from pathlib import Path

import jax
import numpy as np
import pytest

from embeddinggemma_jax.train.ul2 import export_embedder_init, extract_encoder

# The generic trainer and its test helpers (landing separately).
Trainer = pytest.importorskip("embeddinggemma_jax.train.trainer").Trainer
trainlib = pytest.importorskip("trainlib")
UL2Task = pytest.importorskip("embeddinggemma_jax.train.ul2").UL2Task


def _ul2_config(tmp: Path, **ul2):
    return trainlib.load_config(
        "ul2_adaptation",
        "tiny",
        tokenizer=str(trainlib.train_sentencepiece(tmp / "spm")),
        train_data=str(trainlib.write_jsonl(tmp / "data" / "text.jsonl", trainlib.records(48))),
        **{"ul2.text_fields": ("query", "positive")},
        **{f"ul2.{k}": v for k, v in ul2.items()},
    )


def test_iterator_resumes_exactly(tmp_path):
    for pack in (False, True):
        task = UL2Task(_ul2_config(tmp_path, pack=pack))
        expected = trainlib.assert_iterator_resumes(task, f"pack={pack}")
        assert expected[0]["decoder_loss_mask"].sum() > 0


def test_ul2_stage_then_prefinetuning_from_its_encoder(tmp_path):
    config = _ul2_config(tmp_path)
    trainer = Trainer(config, tmp_path / "ul2", task=lambda mesh: UL2Task(config))
    summary = trainer.fit()
    trainer.close()
    assert summary["step"] == config.num_steps
    losses = [row["loss"] for row in summary["history"]["train"]]
    assert len(losses) == config.num_steps and all(np.isfinite(losses))
    task = trainer.task
    embedder_config = task.model_config.encoder

    # The workdir's checkpoint -> embedder params: the trained encoder plus a fresh head.
    params = extract_encoder(tmp_path / "ul2", embedder_config, jax.random.key(0))
    for a, b in zip(
        trainlib.leaves(params["encoder"]), trainlib.leaves(trainer.state.params["encoder"])
    ):
        np.testing.assert_array_equal(a, b)

    # -> a sentence-transformers folder that a contrastive stage starts from (init_from).
    folder = export_embedder_init(
        tmp_path / "ul2", embedder_config, tmp_path / "init", tokenizer=config.tokenizer
    )
    stage = trainlib.tiny_config(tmp_path, num_steps=2, **{"checkpoint.every": 0})
    with stage.unlocked():
        stage.init_from = str(folder)
        stage.tokenizer = ""
    contrastive = Trainer(stage, tmp_path / "prefinetune")
    contrastive.restore_or_init()
    for a, b in zip(
        trainlib.leaves(contrastive.state.params["encoder"]), trainlib.leaves(params["encoder"])
    ):
        np.testing.assert_array_equal(a, b)
    summary = contrastive.fit()
    contrastive.close()
    assert summary["step"] == 2
    assert all(np.isfinite(row["loss"]) for row in summary["history"]["train"])


def test_cross_attention_warmup_steps_freeze_everything_else(tmp_path):
    """ul2.cross_attention_warmup_steps reaches the optimizer: during the warm-up only the
    decoder's cross-attention changes (everything else bit-identical), after it everything."""
    from embeddinggemma_jax.model.encoder_decoder import cross_attention_mask

    config = _ul2_config(tmp_path, cross_attention_warmup_steps=2)
    snapshots = []
    trainer = Trainer(
        config,
        tmp_path / "run",
        task=lambda mesh: UL2Task(config),
        on_step=lambda t, step: snapshots.append(trainlib.leaves(t.state.params)),
    )
    trainer.restore_or_init()
    start = trainlib.leaves(trainer.state.params)
    trainer.fit()
    trainer.close()
    cross = jax.tree.leaves(cross_attention_mask(trainer.state.params))
    assert any(cross) and not all(cross)
    before = start
    for step, after in enumerate(snapshots, 1):
        moved = [bool(np.any(a != b)) for a, b in zip(after, before)]
        if step <= 2:
            assert all(moved[i] for i, c in enumerate(cross) if c), step
            assert not any(moved[i] for i, c in enumerate(cross) if not c), step
        else:
            assert all(moved), step
        before = after
