"""Interruption: a run killed after step k and resumed from its checkpoint reaches step k + m with
exactly the losses and parameters of an uninterrupted run; SIGTERM saves a checkpoint and stops."""

import json
import os
import signal

import jax
import numpy as np
import pytest
import trainlib

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.train.trainer import Trainer


class Killed(Exception):
    pass


def _losses(workdir):
    """step -> loss from metrics.jsonl (a re-run step overwrites the killed run's row)."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "train":
            out[row["step"]] = row["loss"]
    return out


@pytest.fixture(scope="module")
def compilation_cache(compilation_cache, cheap_compile):
    """Trainers with identical steps reuse one compilation (same HLO) within this module
    (conftest's module cache), made XLA's cheapest way (cheap_compile)."""
    return compilation_cache


def test_resume_after_kill_is_exact(tmp_path, compilation_cache):
    total, kill_at = 5, 3
    config = trainlib.tiny_config(tmp_path, num_steps=total, **{"checkpoint.every": 2})

    straight = Trainer(config, tmp_path / "straight")
    straight.fit()
    want_params = jax.device_get(straight.state.params)
    straight.close()

    def kill(trainer, step):
        if step == kill_at:
            raise Killed

    interrupted = Trainer(config, tmp_path / "resumed", on_step=kill)
    with pytest.raises(Killed):
        interrupted.fit()
    interrupted.close()
    # Killed after step 3; the last checkpoint is step 2, so step 3 is redone.
    assert checkpoint.resolve_step_dir(tmp_path / "resumed").name == "2"

    resumed = Trainer(config, tmp_path / "resumed")
    summary = resumed.fit()
    resumed.close()
    assert summary["step"] == total and not summary["preempted"]
    assert resumed.history["train"][0]["step"] == 3  # restarted from the step-2 checkpoint

    want, got = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(got) == list(range(1, total + 1))
    assert got == want  # exactly
    got_params = jax.device_get(resumed.state.params)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(want_params)[0], jax.tree.leaves(got_params)
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_sigterm_saves_and_stops(tmp_path, compilation_cache):
    config = trainlib.tiny_config(tmp_path, num_steps=5, **{"checkpoint.every": 0})

    def preempt(trainer, step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(config, tmp_path / "run", on_step=preempt)
    summary = trainer.fit()
    trainer.close()
    assert summary["preempted"] and summary["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored
    step_dir = checkpoint.resolve_step_dir(tmp_path / "run")
    assert step_dir.name == "2"
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    assert meta["data"]["step"] == 2  # the data iterator resumes with step 2's successor

    again = Trainer(config, tmp_path / "run")
    assert again.restore_or_init() == 2
    again.close()
