"""What the experiment configs share: variant parsing and the run settings several stages use.

A config file is loaded by path (``--config=configs/x.py:variant``), so it imports this module
after putting the repository root on ``sys.path``::

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
    from configs import common  # noqa: E402

    def get_config(arg=None):
        variant = common.variant(arg, ("a", "b"), __file__)
        c = base_config()
        if variant == "a":
            common.accelerator(c)
        ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from embeddinggemma_jax.errors import LocatedError


def variant(arg: str | None, variants: Sequence[str], file: str, default: str | None = None) -> str:
    """`arg` (default: `default`, else the first of `variants`), or one LocatedError line naming
    the config file: ``configs/x.py: variant must be one of ('a', 'b'), got 'bad'``."""
    chosen = arg or default or variants[0]
    if chosen not in variants:
        raise LocatedError(
            f"variant must be one of {tuple(variants)}, got {arg!r}",
            where=f"configs/{os.path.basename(file)}",
        )
    return chosen


def accelerator(c) -> None:
    """bfloat16 compute (params stay float32), rematerialised layers, params and optimizer state
    sharded over every device (fsdp): what a stage of the 300m model runs with on TPU / GPU."""
    c.model.dtype = "bfloat16"
    c.model.remat = "dots_saveable"
    c.mesh.data = 1
    c.mesh.fsdp = -1


def cosine_decay(
    c,
    learning_rate: float | None = None,
    warmup_steps: int | None = None,
    *,
    end_fraction: float = 0.1,
    weight_decay: float = 0.01,
) -> None:
    """Linear warm-up to `learning_rate`, cosine decay to `end_fraction` of it, AdamW with
    `weight_decay`: the schedule every long stage uses (None leaves a setting as it is)."""
    if learning_rate is not None:
        c.optimizer.learning_rate = learning_rate
    if warmup_steps is not None:
        c.optimizer.warmup_steps = warmup_steps
    c.optimizer.decay = "cosine"
    c.optimizer.end_learning_rate_fraction = end_fraction
    c.optimizer.weight_decay = weight_decay


def quiet(c, log_every: int) -> None:
    """A run inside a larger job (a test, a search trial, a recipe stage): synchronous
    checkpoints (the caller reads them back at once), a log line every `log_every` steps, no
    TensorBoard, no progress bar (the caller prints its own)."""
    c.checkpoint.async_save = False
    c.log.every = log_every
    c.log.tensorboard = False
    c.log.progress = False


def smoke_run(c) -> None:
    """A few quiet CPU steps for tests and smoke runs: high learning rate, one warm-up step,
    checkpoints every 2 steps, a log line per step."""
    c.num_steps = 3
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1
    c.checkpoint.every = 2
    quiet(c, log_every=1)
