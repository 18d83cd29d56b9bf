"""Dataset mixtures: which dataset each global batch comes from.

Each global batch is drawn from ONE dataset (as in the EmbeddingGemma recipe: in-batch negatives
then come from the same task). The dataset of step ``s`` is a pure function of ``(seed, s)`` and the
weights: a counter-based hash (SplitMix64) of ``(seed, s)`` gives a uniform number in [0, 1) that is
looked up in the cumulative weights. So every host picks the same dataset without communicating,
any step can be computed without replaying the ones before it, and resuming is exact.

`Mixture.locate(step)` also returns how many batches that dataset has served before `step` (its
cursor), which is where the dataset's own shuffled stream continues.

Mixtures as config (the recipe's mixture search, arXiv 2509.20354 §2.3): a mixture is a mapping
``{dataset name: weight}`` over the named datasets of ``config.data.datasets``, each dataset in one
of the paper's task groups (`TASK_GROUPS`). `seed_mixture` reads the config's weights (the seed
trial), `dirichlet_mixtures` draws seeded samples on the simplex (the other initial trials), and
`with_weights` writes a mixture back into a ``data.datasets`` list.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence

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


# ---------------------------------------------------------------------------------------------
# Mixtures as config

# The paper's three task groups and the builders (`embeddinggemma_jax.data.build`) in each.
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "task": ("definitions", "perlfaq"),
    "language": ("catalogs",),
    "code": ("stdlib", "sympy"),
}
# Datasets whose source is not a pip wheel (perlfaq: the Debian package perl-doc): built only
# when asked for, never in a default mixture.
OPTIONAL_DATASETS = frozenset({"perlfaq"})
# The smallest positive weight a sampled mixture keeps (`Mixture` needs every weight > 0).
MIN_WEIGHT = 1e-6


def task_group(name: str) -> str | None:
    """The task group of a dataset named like a builder (``"catalogs"``, ``"sympy"``), else None."""
    for group, names in TASK_GROUPS.items():
        if name in names:
            return group
    return None


def _check_names(names: Sequence[str]) -> list[str]:
    names = [str(n) for n in names]
    if not names:
        raise ValueError("a mixture needs at least one dataset name")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be distinct, got {names}")
    return names


def dirichlet_mixtures(
    names: Sequence[str], n: int, seed: int, alpha: float = 1.0
) -> list[dict[str, float]]:
    """`n` mixtures drawn from a symmetric Dirichlet(`alpha`) over `names`, seeded.

    Deterministic for (names, seed, alpha), and prefix-stable: the first k of ``n`` samples are the
    ``k`` samples, so a search that asks for more trials later keeps its earlier ones. Weights are
    on the simplex (sum 1) and at least `MIN_WEIGHT` (renormalised), so each is a valid `Mixture`.
    alpha = 1 is uniform on the simplex; smaller alpha favours mixtures dominated by few datasets.
    """
    names = _check_names(names)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & _MASK64, len(names)]))
    out = []
    for _ in range(n):
        w = rng.dirichlet(np.full(len(names), float(alpha)))
        w = np.maximum(w, MIN_WEIGHT)
        w = w / w.sum()
        out.append({name: float(x) for name, x in zip(names, w)})
    return out


def normalize(mixture: Mapping[str, float]) -> dict[str, float]:
    """The mixture scaled to sum 1; every weight must be a positive finite number."""
    _check_names(list(mixture))
    for name, w in mixture.items():
        if not (math.isfinite(float(w)) and float(w) > 0):
            raise ValueError(f"dataset {name!r}: weight must be a positive number, got {w}")
    total = sum(float(w) for w in mixture.values())
    return {name: float(w) / total for name, w in mixture.items()}


def _as_dict(dataset) -> dict:
    """A ``data.datasets`` entry (dict, ConfigDict or `DatasetConfig`) as a plain dict."""
    if hasattr(dataset, "to_dict"):
        return dataset.to_dict()
    if dataclasses.is_dataclass(dataset):
        return dataclasses.asdict(dataset)
    return dict(dataset)


def _dataset_name(dataset: Mapping, index: int) -> str:
    name = dataset.get("name") or str(dataset.get("path", "")).rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"data.datasets[{index}]: needs a name (or a path) to be in a mixture")
    return name


def seed_mixture(datasets: Sequence) -> dict[str, float]:
    """The mixture a config gives (``config.data.datasets``), normalised: the search's seed trial."""
    mixture = {}
    for i, d in enumerate(map(_as_dict, datasets)):
        name = _dataset_name(d, i)
        if name in mixture:
            raise ValueError(f"data.datasets[{i}]: dataset name {name!r} appears twice")
        mixture[name] = d.get("weight", 1.0)
    return normalize(mixture)


def with_weights(datasets: Sequence, mixture: Mapping[str, float]) -> list[dict]:
    """A copy of ``config.data.datasets`` (as dicts) with the weights of `mixture` (same names)."""
    out = [_as_dict(d) for d in datasets]
    names = [_dataset_name(d, i) for i, d in enumerate(out)]
    if sorted(names) != sorted(mixture):
        raise ValueError(
            f"mixture names {sorted(mixture)} differ from the datasets' {sorted(names)}"
        )
    weights = normalize(mixture)
    for name, d in zip(names, out):
        d["weight"] = weights[name]
    return out
