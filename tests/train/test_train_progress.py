"""The progress bar counts completed steps: a dispatched step is counted only once the device has
finished it, and at most one step is in flight beyond what the bar shows."""

from test_train_nonfinite import _config, _Quadratic

from embeddinggemma_jax.train import trainer as trainer_module
from embeddinggemma_jax.train.trainer import Trainer


def test_bar_counts_finished_steps_with_one_in_flight(tmp_path, monkeypatch):
    bars = []
    real_tqdm = trainer_module.tqdm

    def recording_tqdm(*args, **kwargs):
        bars.append(real_tqdm(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(trainer_module, "tqdm", recording_tqdm)
    seen = []
    config = _config(6)
    config.log.every = 100  # no logging step that would drain the queue
    config.log.progress = True
    trainer = Trainer(
        config,
        tmp_path / "run",
        task=_Quadratic(nan_at=()),
        on_step=lambda t, step: seen.append((step, bars[0].n)),
    )
    summary = trainer.fit()
    trainer.close()
    assert summary["step"] == 6 and bars[0].n == 6
    # Right after step k is dispatched the bar shows k - 1 (the first, compiling step is
    # waited for): the bar never runs ahead of the device, and never lags by more than one.
    assert seen[0] == (1, 1)
    assert [n for _, n in seen[1:-1]] == [k - 1 for k, _ in seen[1:-1]]
    assert all(k - 1 <= n <= k for k, n in seen)
