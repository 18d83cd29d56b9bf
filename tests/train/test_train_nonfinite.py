"""Non-finite steps: a batch whose loss is NaN never reaches the params or a checkpoint; the
skips are counted, and too many in a row stop the run with one clear error."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from jax.sharding import PartitionSpec

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.train.config import base_config
from embeddinggemma_jax.train.step import TrainTask
from embeddinggemma_jax.train.trainer import NonFiniteError, Trainer

sys.path.insert(0, str(REPO))  # configs/ is a folder of the checkout, as the configs import it
from configs import common  # noqa: E402


class _Batches:
    """x = 1 + step / 10, except NaN at the steps in `nan_at` (1-based); state = next step."""

    def __init__(self, nan_at):
        self.nan_at, self.i = set(nan_at), 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        x = np.full((4, 3), 1.0 + self.i / 10, np.float32)
        if self.i in self.nan_at:
            x[0, 0] = np.nan
        return {"x": x}

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = int(state["i"])


class _Quadratic(TrainTask):
    name = "quadratic"
    global_batch_size = 4

    def __init__(self, nan_at):
        self.nan_at = nan_at

    def param_shapes(self):
        return {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}

    def param_logical_axes(self):
        return {"w": PartitionSpec()}

    def initial_params(self, rng, shardings):
        return jax.device_put({"w": jnp.ones((3,), jnp.float32)}, shardings)

    def data_iterator(self, start_step=0):
        it = _Batches(self.nan_at)
        it.set_state({"i": start_step})
        return it

    def value_and_grad(self, params, batch, rng, frozen):
        def loss(p):
            value = jnp.mean((batch["x"] * p["w"] - 0.5) ** 2)
            return value, {}

        return jax.value_and_grad(loss, has_aux=True)(params)


def _config(num_steps, **nonfinite):
    c = base_config()
    common.quiet(c, log_every=1)
    c.num_steps = num_steps
    c.mesh.data = 1
    c.optimizer.learning_rate = 0.05
    c.checkpoint.every = 0
    c.nonfinite.update(nonfinite)
    return c


def test_nan_batch_is_skipped_counted_and_never_saved(tmp_path):
    params_after = {}
    trainer = Trainer(
        _config(5),
        tmp_path / "run",
        task=_Quadratic(nan_at=(3,)),
        on_step=lambda t, step: params_after.update({step: np.asarray(t.state.params["w"])}),
    )
    summary = trainer.fit()
    trainer.close()
    rows = summary["history"]["train"]
    assert [r["nonfinite"] for r in rows] == [0, 0, 1, 0, 0]
    assert rows[2]["skipped_steps"] == 1 and rows[-1]["skipped_steps"] == 1
    assert np.isnan(rows[2]["loss"]) and np.isfinite(rows[3]["loss"])
    np.testing.assert_array_equal(params_after[3], params_after[2])  # the NaN step: no update
    assert not np.array_equal(params_after[4], params_after[3])  # training goes on
    saved = checkpoint.restore_params(
        tmp_path / "run", {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
    )
    assert np.all(np.isfinite(np.asarray(saved["w"])))
    np.testing.assert_array_equal(np.asarray(saved["w"]), params_after[5])


def test_too_many_consecutive_nan_steps_stop_the_run(tmp_path):
    trainer = Trainer(_config(8, max_consecutive=2), tmp_path / "run", task=_Quadratic((2, 3, 4)))
    with pytest.raises(NonFiniteError, match=r"2 consecutive steps .*max_consecutive=2"):
        trainer.fit()
    trainer.close()
    assert np.all(np.isfinite(np.asarray(trainer.state.params["w"])))


def test_policy_apply_lets_the_nan_through(tmp_path):
    trainer = Trainer(_config(3, policy="apply"), tmp_path / "run", task=_Quadratic((2,)))
    summary = trainer.fit()
    trainer.close()
    assert "nonfinite" not in summary["history"]["train"][0]
    assert np.isnan(np.asarray(trainer.state.params["w"])).any()
