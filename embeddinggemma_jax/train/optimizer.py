"""AdamW with warmup + cosine/linear decay, global-norm clipping, a weight-decay mask and optional
gradient accumulation.

Config (``config.optimizer``)::

    learning_rate: peak learning rate
    warmup_steps: linear warmup from learning_rate / warmup_steps to learning_rate (in updates)
    decay: "cosine" | "linear" | "constant" after warmup, down to
    end_learning_rate_fraction * learning_rate at the last update
    b1, b2, eps, weight_decay: AdamW (decoupled weight decay, scaled by the learning rate)
    clip_norm: global-norm clipping of the (accumulated) gradient; 0 or None: off
    grad_accum_steps: k > 1 accumulates k micro-batches (one per train step) per update
    no_decay: parameter names never decayed (norm scales are named "scale"; biases "bias")

The trainer counts micro-steps; with ``grad_accum_steps = k`` the schedule runs over
``ceil(num_steps / k)`` updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

DECAYS = ("cosine", "linear", "constant")
DEFAULTS = dict(
    learning_rate=1e-4,
    warmup_steps=0,
    decay="cosine",
    end_learning_rate_fraction=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.01,
    clip_norm=1.0,
    grad_accum_steps=1,
    no_decay=("scale", "bias"),
)


def _settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        cfg = {}
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"optimizer: unknown keys {sorted(unknown)} (expected {sorted(DEFAULTS)})")
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    if out["decay"] not in DECAYS:
        raise ValueError(f"optimizer.decay must be one of {DECAYS}, got {out['decay']!r}")
    if not out["learning_rate"] > 0:
        raise ValueError(f"optimizer.learning_rate must be > 0, got {out['learning_rate']}")
    if out["warmup_steps"] < 0:
        raise ValueError("optimizer.warmup_steps must be >= 0")
    if int(out["grad_accum_steps"]) < 1:
        raise ValueError("optimizer.grad_accum_steps must be >= 1")
    if not 0 <= out["end_learning_rate_fraction"] <= 1:
        raise ValueError("optimizer.end_learning_rate_fraction must be in [0, 1]")
    return out


def num_updates(num_steps: int, grad_accum_steps: int = 1) -> int:
    return max(1, math.ceil(num_steps / max(1, int(grad_accum_steps))))


def make_schedule(cfg: Mapping[str, Any] | None, total_updates: int) -> optax.Schedule:
    """Learning rate per update count: linear warmup, then cosine / linear / constant."""
    s = _settings(cfg)
    peak, warm = float(s["learning_rate"]), int(s["warmup_steps"])
    end = peak * float(s["end_learning_rate_fraction"])
    decay_len = max(total_updates - warm - 1, 1)
    kind = s["decay"]

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm_lr = peak * (count + 1.0) / max(warm, 1)
        t = jnp.clip((count - warm) / decay_len, 0.0, 1.0)
        if kind == "cosine":
            lr = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
        elif kind == "linear":
            lr = peak + (end - peak) * t
        else:
            lr = jnp.full_like(t, peak)
        return jnp.where(count < warm, warm_lr, lr)

    return schedule


def decay_mask(params: Any, no_decay: Sequence[str] = ("scale", "bias")) -> Any:
    """True for parameters that get weight decay: every leaf whose name is not in `no_decay`."""
    skip = set(no_decay)

    def keep(path, _):
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        return str(name) not in skip

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
    cfg: Mapping[str, Any] | None, num_steps: int
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
    """(optax transformation, learning rate as a function of the *train step*).

    The transformation takes float32 gradients shaped like the params; with gradient
    accumulation it is an ``optax.MultiSteps`` that applies an update every k-th call.
    """
    s = _settings(cfg)
    k = int(s["grad_accum_steps"])
    schedule = make_schedule(s, num_updates(num_steps, k))
    no_decay = tuple(s["no_decay"])
    parts = []
    if s["clip_norm"]:
        parts.append(optax.clip_by_global_norm(float(s["clip_norm"])))
    parts.append(
        optax.adamw(
            schedule,
            b1=float(s["b1"]),
            b2=float(s["b2"]),
            eps=float(s["eps"]),
            weight_decay=float(s["weight_decay"]),
            mask=lambda p: decay_mask(p, no_decay),
        )
    )
    tx = optax.chain(*parts)
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)

    def lr_at_step(step):
        return schedule(jnp.asarray(step) // k)

    return tx, lr_at_step
