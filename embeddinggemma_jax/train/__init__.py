"""Training: objective plumbing (GradCache), train state, step and trainer.

Exports are resolved lazily, so ``embeddinggemma_jax.train.step`` (or ``.gradcache``) imports
without the data pipeline's dependencies (Grain, tensorboardX), e.g. in benchmarks.
"""

import importlib

_EXPORTS = {
    "TrainState": "state",
    "create_state": "state",
    "state_shardings": "state",
    "make_optimizer": "optimizer",
    "make_schedule": "optimizer",
    "decay_mask": "optimizer",
    "TASKS": "step",
    "task_class": "step",
    "with_trainable_windows": "optimizer",
    "TrainTask": "step",
    "make_train_step": "step",
    "ContrastiveTask": "contrastive",
    "UL2Task": "ul2",
    "Trainer": "trainer",
    "make_task": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
