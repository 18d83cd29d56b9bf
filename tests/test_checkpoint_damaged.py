"""Damaged checkpoints on resume: a truncated file or a missing file in the newest steps is
detected, those steps are moved aside (kept) with a warning naming them, and the run resumes from
the newest intact one to the same parameters as an undisturbed run; with none intact, one clear
error instead of a silent restart from step 0."""

import logging

import jax
import numpy as np
import pytest
from train.trainlib import tiny_config

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.train.trainer import Trainer


@pytest.fixture(scope="module")
def compilation_cache(compilation_cache, cheap_compile):
    """The trainers here compile their train step once (conftest's module cache), XLA's cheapest
    way (cheap_compile)."""
    return compilation_cache


def _fit(config, workdir):
    trainer = Trainer(config, workdir)
    summary = trainer.fit()
    trainer.close()
    return trainer, summary


def test_damaged_checkpoints_fall_back_and_are_kept(tmp_path, compilation_cache, caplog):
    config = tiny_config(tmp_path, num_steps=4, **{"checkpoint.every": 1, "checkpoint.keep": 4})
    run = tmp_path / "run"
    first, _ = _fit(config, run)
    want = jax.device_get(first.state.params)
    root = run / "checkpoints"
    assert [s for s, _ in checkpoint.complete_steps(run)] == [1, 2, 3, 4]

    # Step 4: a truncated array file; step 3: its meta item's file is missing.
    data = sorted((root / "4" / "params").rglob("d/*"), key=lambda p: -p.stat().st_size)[0]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    (root / "3" / "meta" / "metadata").unlink()

    with caplog.at_level(logging.WARNING):
        second, summary = _fit(config, run)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{root / '4'} is damaged" in w for w in warnings), warnings
    assert any(f"{root / '3'} is damaged" in w for w in warnings), warnings
    assert second.history["train"][0]["step"] == 3  # resumed from step 2
    assert summary["step"] == 4
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(jax.device_get(second.state.params))):
        np.testing.assert_array_equal(a, b)
    damaged = run / "damaged_checkpoints"
    assert sorted(p.name for p in damaged.iterdir()) == ["3", "4"]  # kept, not deleted
    assert [s for s, _ in checkpoint.complete_steps(run)] == [1, 2, 3, 4]  # redone

    # Nothing intact: one error naming the damage, never a restart from step 0.
    for step in (1, 2, 3, 4):
        (root / str(step) / "meta" / "metadata").unlink()
    with pytest.raises(UserError, match=r"no intact checkpoint: steps 4, 3, 2, 1 are damaged"):
        Trainer(config, run).restore_or_init()
