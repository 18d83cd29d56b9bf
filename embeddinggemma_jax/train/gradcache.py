"""GradCache: exact full-batch contrastive gradients with the memory of one sub-batch.

The contrastive loss couples every example of the (global) batch, so its gradient normally needs
the activations of the whole batch at once. GradCache (Gao et al., 2021) splits the work:

1. embed every sub-batch ("chunk") without gradient (``lax.map``), keeping only the embeddings;
2. take the loss and its gradient with respect to those embeddings (cheap: [B, E] arrays);
3. re-run each chunk under ``jax.vjp`` inside ``lax.scan`` and pull the cached embedding gradient
   back to the parameters, accumulating the parameter gradient chunk by chunk.

The result equals ``jax.value_and_grad`` of the full-batch loss up to float summation order. The
encoder must be deterministic (the same chunk embeds identically in steps 1 and 3): no dropout, or
an rng that the caller folds in per example.

Batch structure (what both functions here expect)::

    batch = {
        "query":    {"tokens": [B, T_q] int32, "mask": [B, T_q] bool},
        "positive": {"tokens": [B, T_p] int32, "mask": [B, T_p] bool},
        "negative": {"tokens": [B, M, T_n] int32, "mask": [B, M, T_n] bool},   # optional
    }

Any role names work; each role is a dict of arrays whose leading axes (``tokens.shape[:-1]``,
i.e. [B] or [B, M]) are the rows to embed. ``embed_fn(params, inputs)`` gets ``inputs`` as the
same dict with one row axis (``{"tokens": [b, T], "mask": [b, T]}``) and returns [b, E]. The
embeddings handed to ``loss_fn`` have the role's leading axes back ([B, E] or [B, M, E]).
``loss_fn(embeddings, extra) -> (loss, metrics)`` receives everything that carries no gradient in
``extra`` (ids, precomputed or frozen-teacher embeddings, ...); EmbeddingGemma's objective in that
form is `losses.embeddinggemma_loss_fn`.

Both ``gradcache_value_and_grad`` and ``full_batch_value_and_grad`` return
``f(params, batch, extra=None) -> ((loss, metrics), grads)`` so a jitted train step can switch
between them on ``config.grad_cache.chunk``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Inputs = dict[str, Array]
Batch = dict[str, Inputs]
EmbedFn = Callable[[Any, Inputs], Array]
LossFn = Callable[[dict[str, Array], Any], tuple[Array, Any]]
ValueAndGradFn = Callable[..., tuple[tuple[Array, Any], Any]]

QUERY, POSITIVE, NEGATIVE = "query", "positive", "negative"


def _row_shape(role: str, inputs: Inputs) -> tuple[int, ...]:
    """Leading (row) axes of a role: ``tokens.shape[:-1]``; every leaf must share them."""
    if not isinstance(inputs, dict) or "tokens" not in inputs:
        raise ValueError(
            f"batch[{role!r}] must be a dict with a 'tokens' array, got {type(inputs)}"
        )
    lead = tuple(inputs["tokens"].shape[:-1])
    if not lead:
        raise ValueError(
            f"batch[{role!r}]['tokens'] must be [B, T] or [B, M, T], got {inputs['tokens'].shape}"
        )
    for k, v in inputs.items():
        if tuple(v.shape[: len(lead)]) != lead:
            raise ValueError(
                f"batch[{role!r}][{k!r}] has shape {v.shape}; expected leading axes {lead} like 'tokens'"
            )
    return lead


def _flatten_rows(inputs: Inputs, lead: Sequence[int]) -> Inputs:
    n = math.prod(lead)
    return {k: v.reshape((n,) + v.shape[len(lead) :]) for k, v in inputs.items()}


Group = list[tuple[str, tuple[int, ...]]]


def _group_roles(batch: Batch) -> list[Group]:
    """Roles whose rows have identical per-row inputs (same keys, trailing shapes and dtypes) are
    embedded as one stream of rows: fewer, fuller chunks and one compiled encoder per stream."""
    if not isinstance(batch, dict) or not batch:
        raise ValueError("batch must be a non-empty dict of role -> {'tokens': ..., 'mask': ...}")
    groups: dict[Any, Group] = {}
    for role, inputs in batch.items():
        lead = _row_shape(role, inputs)
        key = tuple(sorted((k, v.shape[len(lead) :], str(v.dtype)) for k, v in inputs.items()))
        groups.setdefault(key, []).append((role, lead))
    return list(groups.values())


def _concat_rows(batch: Batch, group: Group) -> Inputs:
    """The group's rows as one stream: {key: [N, ...]}, roles in group order."""
    flat = [_flatten_rows(batch[role], lead) for role, lead in group]
    return {k: jnp.concatenate([f[k] for f in flat], axis=0) for k in flat[0]}


def _split_rows(x: Array, group: Group) -> dict[str, Array]:
    """Inverse of ``_concat_rows`` for per-row outputs: [N, ...] -> {role: [*lead, ...]}."""
    out, start = {}, 0
    for role, lead in group:
        n = math.prod(lead)
        out[role] = x[start : start + n].reshape(tuple(lead) + x.shape[1:])
        start += n
    return out


def _chunk_plan(n: int, chunk_size: int) -> tuple[int, int]:
    """(number of chunks C, rows per chunk b) with C·b ≥ n and b ≤ chunk_size."""
    b = min(chunk_size, n)
    return -(-n // b), b


def _explicitly_sharded(x: Array) -> bool:
    sharding = getattr(jax.typeof(x), "sharding", None)
    return sharding is not None and any(a is not None for a in sharding.spec)


def _to_chunks(x: Array, c: int, b: int, *, pad_with_zeros: bool) -> Array:
    """[n, ...] -> [C, b, ...]. Row r goes to chunk r % C (strided), so a batch sharded over its
    leading axis keeps every chunk spread over all devices. Padding rows are copies of real rows
    (finite through any encoder) or zeros (for cotangents, so they contribute nothing)."""
    n = x.shape[0]
    if c * b > n:
        if _explicitly_sharded(x):
            raise ValueError(
                f"GradCache: {n} rows sharded over an Explicit mesh axis cannot be padded to "
                f"{c} chunks of {b}; pick a chunk_size that divides every stream's row count, or "
                "use Auto mesh axes (embeddinggemma_jax.parallel.make_mesh)"
            )
        if pad_with_zeros:
            x = jnp.concatenate([x, jnp.zeros((c * b - n,) + x.shape[1:], x.dtype)], axis=0)
        else:
            x = jnp.take(x, jnp.arange(c * b) % n, axis=0)
    return jnp.swapaxes(x.reshape((b, c) + x.shape[1:]), 0, 1)


def _from_chunks(x: Array, n: int) -> Array:
    """[C, b, ...] -> [n, ...], the inverse of ``_to_chunks`` (padding rows dropped)."""
    c, b = x.shape[:2]
    return jnp.swapaxes(x, 0, 1).reshape((c * b,) + x.shape[2:])[:n]


def embed_batch(
    embed_fn: EmbedFn, params: Any, batch: Batch, chunk_size: int | None = None
) -> dict[str, Array]:
    """Embeddings of every role without gradient: role -> [B, E] or [B, M, E].

    With ``chunk_size`` the rows are embedded ``chunk_size`` at a time under ``lax.map`` (the last
    chunk padded), so peak activation memory is that of one chunk. Also the way to run a frozen
    teacher over a batch.
    """
    params = jax.lax.stop_gradient(params)
    out = {}
    for group in _group_roles(batch):
        rows = _concat_rows(batch, group)
        if chunk_size is None:
            e = embed_fn(params, rows)
        else:
            n = rows["tokens"].shape[0]
            c, b = _chunk_plan(n, chunk_size)
            chunks = {k: _to_chunks(v, c, b, pad_with_zeros=False) for k, v in rows.items()}
            e = _from_chunks(jax.lax.map(lambda ch: embed_fn(params, ch), chunks), n)
        out.update(_split_rows(jax.lax.stop_gradient(e), group))
    return out


def full_batch_value_and_grad(embed_fn: EmbedFn, loss_fn: LossFn) -> ValueAndGradFn:
    """Plain ``jax.value_and_grad`` through the encoder over the whole batch (the train step's
    path when GradCache is off). Same signature as ``gradcache_value_and_grad``."""

    def f(params: Any, batch: Batch, extra: Any = None):
        groups = _group_roles(batch)

        def total(p):
            embs = {}
            for group in groups:
                embs.update(_split_rows(embed_fn(p, _concat_rows(batch, group)), group))
            return loss_fn(embs, extra)

        return jax.value_and_grad(total, has_aux=True)(params)

    return f


def gradcache_value_and_grad(
    embed_fn: EmbedFn,
    loss_fn: LossFn,
    chunk_size: int,
    *,
    policy: Callable[..., bool] | None = None,
) -> ValueAndGradFn:
    """GradCache version of ``full_batch_value_and_grad``: same values and gradients, with
    activation memory of ``chunk_size`` rows instead of the whole batch.

    Args:
      embed_fn: ``(params, {"tokens": [b, T], "mask": [b, T], ...}) -> [b, E]``.
      loss_fn: ``(embeddings: {role: [B, E] | [B, M, E]}, extra) -> (loss scalar, metrics)``.
      chunk_size: rows per sub-batch (need not divide any row count). Roles with identical
        per-row input shapes share one stream of chunks.
      policy: ``jax.checkpoint`` policy for the re-forward inside each chunk; None recomputes
        everything. The re-forward always runs under ``jax.checkpoint(prevent_cse=True)`` so XLA
        cannot merge it with the no-gradient pass and keep the whole batch's activations alive.
    Returns:
      ``f(params, batch, extra=None) -> ((loss, metrics), grads)``; pure, for use inside ``jit``.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"gradcache_value_and_grad: chunk_size must be a positive int, got {chunk_size!r}"
        )
    remat_embed = jax.checkpoint(embed_fn, policy=policy, prevent_cse=True)

    def body(params, acc, xs):
        chunk, cot_be = xs
        _, vjp = jax.vjp(lambda p: remat_embed(p, chunk), params)
        (g,) = vjp(cot_be)
        return jax.tree.map(jnp.add, acc, g), None

    def f(params: Any, batch: Batch, extra: Any = None):
        # (1) embeddings of every chunk, no gradient.
        embs = embed_batch(embed_fn, params, batch, chunk_size)
        # (2) loss and its gradient w.r.t. the embeddings (extra carries no gradient).
        (loss, metrics), cot = jax.value_and_grad(loss_fn, has_aux=True)(embs, extra)
        # (3) re-forward chunk by chunk, pulling the cached cotangents back to the parameters.
        grads = jax.tree.map(jnp.zeros_like, params)
        for group in _group_roles(batch):
            rows = _concat_rows(batch, group)
            n = rows["tokens"].shape[0]
            c, b = _chunk_plan(n, chunk_size)
            chunks = {k: _to_chunks(v, c, b, pad_with_zeros=False) for k, v in rows.items()}
            cot_rows = jnp.concatenate(
                [
                    cot[role].astype(embs[role].dtype).reshape((math.prod(lead), -1))
                    for role, lead in group
                ],
                axis=0,
            )
            cot_chunks = _to_chunks(cot_rows, c, b, pad_with_zeros=True)
            grads, _ = jax.lax.scan(
                lambda acc, xs: body(params, acc, xs), grads, (chunks, cot_chunks)
            )
        return (loss, metrics), grads

    return f
