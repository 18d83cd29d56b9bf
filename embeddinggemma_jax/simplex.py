"""Mixture weights <-> the unit cube, for optimisers that search boxes (the mixture search).

Stick-breaking: K weights on the simplex are the K - 1 break fractions
``u_i = w_i / (w_i + ... + w_{K-1})``, each in [0, 1]; back, ``w_i = u_i * prod_{j<i} (1 - u_j)``
and the last weight takes what is left. Every point of the cube is a mixture and every mixture
(e.g. the seed one) is a point of the cube, up to float64 rounding.

(A uniform point of the cube is not a uniform mixture: later weights get smaller shares. Passing
``u_i`` through its Beta marginal's CDF would fix that, but cubes the remainder near the corners
and loses the inverse's precision there; the search seeds itself with Dirichlet samples instead.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_cube(weights: Sequence[float]) -> list[float]:
    """K non-negative weights (normalised here) -> K - 1 break fractions in [0, 1]."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) < 2:
        raise ValueError(f"need at least two weights, got {list(weights)}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(f"weights must be non-negative and finite, not all 0: {list(weights)}")
    w = w / w.sum()
    out = []
    for i in range(len(w) - 1):
        rest = w[i:].sum()  # summed, not subtracted: no cancellation after a weight near 1
        out.append(float(min(1.0, w[i] / rest)) if rest > 0 else 0.0)
    return out


def from_cube(u: Sequence[float]) -> list[float]:
    """K - 1 break fractions in [0, 1] -> K weights summing to 1 (the inverse of `to_cube`)."""
    u = np.asarray(u, np.float64)
    if u.ndim != 1 or len(u) < 1 or not np.all(np.isfinite(u)) or np.any(u < 0) or np.any(u > 1):
        raise ValueError(f"need one or more numbers in [0, 1], got {list(u)}")
    out, rest = [], 1.0
    for b in u:
        out.append(rest * b)
        rest *= 1.0 - b
    out.append(rest)
    return [float(x) for x in out]
