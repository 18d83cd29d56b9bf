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
    trainable: freezing and warm-ups, a list of ``(regex, from_update, until_update)``: a
        parameter whose "/"-joined path (``decoder/layer_0/cross_attn/q``) fully matches a rule's
        regex (the first rule that matches) changes only for ``from <= update < until`` (None: no
        bound; ``until <= from``: never). Outside its window its gradient is zeroed before
        clipping and its update after AdamW (no Adam step, no weight decay): it stays
        bit-identical. Parameters no rule matches always train; a rule matching nothing is an
        error. E.g. train only cross-attention for the first 1000 updates:
        ``[("decoder/.*cross_attn.*", 0, None), (".*", 1000, None)]``.

The trainer counts micro-steps; with ``grad_accum_steps = k`` the schedule runs over
``ceil(num_steps / k)`` updates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from embeddinggemma_jax.errors import LocatedError

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
    trainable=(),
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


Rule = tuple[str, int | None, int | None]  # (path regex, trainable from update, until update)


def param_path(path) -> str:
    """``"decoder/layer_0/cross_attn/q"`` for a pytree key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_rules(rules: Sequence[Sequence[Any]], where: str = "config.optimizer.trainable"):
    """The rules as (compiled regex, from, until) triples; LocatedError naming the bad entry."""
    out = []
    for i, rule in enumerate(rules):
        if len(rule) != 3:
            raise LocatedError(f"want (regex, from, until), got {rule!r}", where=f"{where}[{i}]")
        regex, lo, hi = rule
        try:
            compiled = re.compile(str(regex))
        except re.error as e:
            raise LocatedError(f"bad regex {regex!r} ({e})", where=f"{where}[{i}]") from e
        for bound in (lo, hi):
            if bound is not None and (not isinstance(bound, int) or bound < 0):
                raise LocatedError(
                    f"steps must be None or ints >= 0, got {rule!r}", where=f"{where}[{i}]"
                )
        out.append((compiled, lo, hi))
    return out


def trainable_labels(tree: Any, rules: Sequence[Rule], where: str = "config.optimizer.trainable"):
    """Pytree like `tree` of labels: ``"rule_<i>"`` of the first rule whose regex fully matches
    the leaf's path, else ``"always"``. LocatedError for a rule that matches no parameter."""
    compiled = check_rules(rules, where)
    used = set()

    def label(path, _):
        name = param_path(path)
        for i, (regex, _, _) in enumerate(compiled):
            if regex.fullmatch(name):
                used.add(i)
                return f"rule_{i}"
        return "always"

    labels = jax.tree_util.tree_map_with_path(label, tree)
    unused = [i for i in range(len(compiled)) if i not in used]
    if unused and jax.tree.leaves(tree):
        i = unused[0]
        raise LocatedError(f"{rules[i][0]!r} matches no parameter", where=f"{where}[{i}]")
    return labels


def _window(lo: int | None, hi: int | None) -> optax.GradientTransformation:
    """Passes updates through while ``lo <= count < hi`` (its own count of calls), else zeros."""
    if lo is not None and hi is not None and hi <= lo:
        return optax.set_to_zero()

    def init(params):
        del params
        return jnp.zeros([], jnp.int32)

    def update(updates, count, params=None):
        del params
        on = jnp.bool_(True)
        if lo is not None:
            on = on & (count >= lo)
        if hi is not None:
            on = on & (count < hi)
        updates = jax.tree.map(lambda u: jnp.where(on, u, jnp.zeros_like(u)), updates)
        return updates, optax.safe_int32_increment(count)

    return optax.GradientTransformation(init, update)


def with_trainable_windows(
    tx: optax.GradientTransformation,
    rules: Sequence[Rule],
    *,
    where: str = "config.optimizer.trainable",
) -> optax.GradientTransformation:
    """`tx` with the `rules`' freezing (see the module docstring): gradients outside a
    parameter's window are zeroed before `tx` (its moments and any clipping never see them),
    updates after it (weight decay does not move a frozen weight either)."""
    if not rules:
        return tx
    check_rules(rules, where)

    def gate():
        transforms = {f"rule_{i}": _window(lo, hi) for i, (_, lo, hi) in enumerate(rules)}
        transforms["always"] = optax.identity()
        return optax.multi_transform(transforms, lambda tree: trainable_labels(tree, rules, where))

    return optax.chain(gate(), tx, gate())


def make_optimizer(
    cfg: Mapping[str, Any] | None, num_steps: int, trainable: Sequence[Rule] = ()
) -> tuple[optax.GradientTransformation, Callable[[Any], jax.Array]]:
    """(optax transformation, learning rate as a function of the *train step*).

    The transformation takes float32 gradients shaped like the params; with gradient
    accumulation it is an ``optax.MultiSteps`` that applies an update every k-th call.
    `trainable`: rules (as ``optimizer.trainable``) a task adds after the configured ones.
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
    rules = [tuple(r) for r in s["trainable"]] + [tuple(r) for r in trainable]
    tx = with_trainable_windows(optax.chain(*parts), rules)
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)

    def lr_at_step(step):
        return schedule(jnp.asarray(step) // k)

    return tx, lr_at_step
