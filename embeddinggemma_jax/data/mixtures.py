"""Dataset mixtures: which dataset each global batch comes from.

Each global batch is drawn from ONE dataset (as in the EmbeddingGemma recipe: in-batch negatives
then come from the same task). The dataset of step ``s`` is a pure function of ``(seed, s)`` and the
weights: a counter-based hash (SplitMix64) of ``(seed, s)`` gives a uniform number in [0, 1) that is
looked up in the cumulative weights. So every host picks the same dataset without communicating,
any step can be computed without replaying the ones before it, and resuming is exact.

`Mixture.locate(step)` also returns how many batches that dataset has served before `step` (its
cursor), which is where the dataset's own shuffled stream continues.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def step_uniforms(seed: int, steps: np.ndarray | Sequence[int]) -> np.ndarray:
    """Deterministic uniforms in [0, 1) for each step: float64 [len(steps)]."""
    steps = np.asarray(steps, dtype=np.int64)
    if np.any(steps < 0):
        raise ValueError("steps must be >= 0")
    key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    x = _splitmix64(steps.astype(np.uint64) ^ key)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class Mixture:
    """Per-step choice of one dataset out of several, by weight, from (seed, step).

    Args:
      weights: one positive, finite weight per dataset (normalised here).
      seed: the mixture seed (the data seed).
    """

    _BLOCK = 4096  # steps per block of the cached prefix counts

    def __init__(self, weights: Sequence[float], seed: int):
        weights = [float(w) for w in weights]
        if not weights:
            raise ValueError("a mixture needs at least one dataset")
        for i, w in enumerate(weights):
            if not math.isfinite(w) or w <= 0:
                raise ValueError(f"dataset {i}: weight must be a positive number, got {w}")
        self.weights = np.asarray(weights) / sum(weights)
        self.seed = int(seed)
        self._cdf = np.cumsum(self.weights)
        self._cdf[-1] = 1.0
        # _prefix[b][d] = number of steps in [0, b * _BLOCK) that chose dataset d.
        self._prefix = [np.zeros(len(weights), np.int64)]
        self._lock = threading.Lock()

    @property
    def num_datasets(self) -> int:
        return len(self.weights)

    def choices(self, steps: np.ndarray | Sequence[int]) -> np.ndarray:
        """The dataset index of each step: int64 [len(steps)]."""
        if self.num_datasets == 1:
            return np.zeros(len(np.asarray(steps)), np.int64)
        u = step_uniforms(self.seed, steps)
        return np.searchsorted(self._cdf, u, side="right").astype(np.int64)

    def choice(self, step: int) -> int:
        """The dataset index of one step."""
        return int(self.choices([step])[0])

    def _block_prefix(self, block: int) -> np.ndarray:
        with self._lock:
            while len(self._prefix) <= block:
                b = len(self._prefix) - 1
                chosen = self.choices(np.arange(b * self._BLOCK, (b + 1) * self._BLOCK))
                counts = np.bincount(chosen, minlength=self.num_datasets)
                self._prefix.append(self._prefix[-1] + counts)
            return self._prefix[block]

    def locate(self, step: int) -> tuple[int, int]:
        """(dataset, cursor): the dataset of `step` and how many earlier steps chose it."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        block, offset = divmod(int(step), self._BLOCK)
        start = block * self._BLOCK
        before = self.choices(np.arange(start, start + offset + 1))
        dataset = int(before[-1])
        cursor = int(self._block_prefix(block)[dataset]) + int(
            np.count_nonzero(before[:-1] == dataset)
        )
        return dataset, cursor
