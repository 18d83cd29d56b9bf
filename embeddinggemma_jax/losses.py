"""The EmbeddingGemma training objective: contrastive, spread-out, distillation and Matryoshka.

Every similarity is a cosine ``s(a, b) = ŝ(a)·ŝ(b)`` where ``ŝ`` is L2 normalisation; the functions
normalise their inputs themselves, so they accept un-normalised (and Matryoshka-truncated)
embeddings. Everything is computed in float32 at least (float64 inputs stay float64, bfloat16 is
promoted) with log-sum-exp, so large batches, tiny temperatures and identical embeddings are safe.

Global batch: all functions are plain ``jnp`` over the full batch axis, so inside ``jax.jit`` with
the batch sharded over a ``data`` mesh axis the similarity matrices are global: every query sees
every device's positives as negatives (XLA inserts the gathers).

Shape letters: B batch, M hard negatives per query, E embedding dim (E_s student, E_t teacher).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from embeddinggemma_jax.model.head import l2_normalize

Array = jax.Array

DISTANCES = ("squared_l2", "cosine")


def _compute_dtype(*xs: Array | None) -> jnp.dtype:
    """float32, or float64 when an input already is (used by the finite-difference tests)."""
    dt = jnp.float32
    for x in xs:
        if x is not None:
            dt = jnp.promote_types(dt, jnp.result_type(x))
    return dt


def _masked_logsumexp(logits: Array, mask: Array) -> tuple[Array, Array]:
    """Log-sum-exp over the last axis of the entries where ``mask`` is True.

    Returns (lse [...], valid [...]) with lse = 0 where a row has no entry. Masked entries are
    replaced before ``exp`` so neither value nor gradient can become inf/NaN.
    """
    valid = jnp.any(mask, axis=-1)
    row_max = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    shifted = jnp.where(mask, logits - row_max, 0.0)
    sumexp = jnp.sum(jnp.where(mask, jnp.exp(shifted), 0.0), axis=-1)
    lse = jnp.log(jnp.where(valid, sumexp, 1.0)) + row_max[..., 0]
    return jnp.where(valid, lse, 0.0), valid


def _gather_rows(x: Array) -> Array:
    """The key side of a [B, B] similarity, replicated when its batch axis is sharded over an
    Explicit mesh axis (global batch: every device needs every row). Under Auto sharding (what
    `embeddinggemma_jax.parallel` builds) or unsharded, a no-op: XLA inserts the all-gather."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    if sharding is None or all(a is None for a in sharding.spec):
        return x
    spec = jax.sharding.PartitionSpec(*([None] * x.ndim))
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(sharding.mesh, spec))


def _ids_or_arange(ids: Array | None, b: int, name: str) -> Array:
    if ids is None:
        return jnp.arange(b, dtype=jnp.int32)
    ids = jnp.asarray(ids)
    if ids.shape != (b,):
        raise ValueError(f"{name} must have shape [B]=({b},), got {ids.shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got {ids.dtype}")
    return ids


def true_negative_mask(b: int, q_ids: Array | None = None, p_ids: Array | None = None) -> Array:
    """TN [B, B] bool: TN(i, j) = q_ids[i] != q_ids[j] and p_ids[i] != p_ids[j] (so TN(i, i) = False).

    ``None`` ids mean all texts are distinct.
    """
    q_ids = _ids_or_arange(q_ids, b, "q_ids")
    p_ids = _ids_or_arange(p_ids, b, "p_ids")
    same_q = q_ids[:, None] == _gather_rows(q_ids)[None, :]
    same_p = p_ids[:, None] == _gather_rows(p_ids)[None, :]
    return ~(same_q | same_p | jnp.eye(b, dtype=bool))


def _check_pair(q: Array, p: Array, fn: str) -> None:
    if q.ndim != 2 or p.ndim != 2 or q.shape != p.shape:
        raise ValueError(
            f"{fn}: q and p must both be [B, E] with equal shapes, got {q.shape} and {p.shape}"
        )


def _hard_negatives_bme(n: Array, q: Array) -> Array:
    """Hard negatives as [B, M, E] (a [B, E] array is M = 1)."""
    if n.ndim == 2:
        n = n[:, None, :]
    if n.ndim != 3 or n.shape[0] != q.shape[0] or n.shape[2] != q.shape[1] or n.shape[1] < 1:
        raise ValueError(
            f"contrastive_loss: n must be [B, E] or [B, M, E] (M >= 1) matching q {q.shape}, got {n.shape}"
        )
    return n


def _contrastive_logits(
    q: Array,
    p: Array,
    n: Array | None,
    *,
    q_ids: Array | None,
    p_ids: Array | None,
    temperature: float,
    hard_negative_alpha: float,
    include_positive_in_denominator: bool,
) -> dict[str, Array]:
    """The pieces of the contrastive loss, shared with the metrics."""
    _check_pair(q, p, "contrastive_loss")
    if isinstance(temperature, (int, float)) and not temperature > 0:  # a traced τ is fine too
        raise ValueError(f"contrastive_loss: temperature must be > 0, got {temperature}")
    b = q.shape[0]
    tn_bb = true_negative_mask(b, q_ids, p_ids)
    if n is not None:
        n = _hard_negatives_bme(jnp.asarray(n), q)
    dt = _compute_dtype(q, p, n)
    q_be, p_be = l2_normalize(q, dtype=dt), l2_normalize(p, dtype=dt)
    inv_tau = jnp.asarray(1.0 / temperature, dt)

    s_bb = jnp.einsum("BE,CE->BC", q_be, _gather_rows(p_be))  # s(q_i, p_j)
    s_pos_b = jnp.einsum("BE,BE->B", q_be, p_be)
    terms = [s_bb * inv_tau]
    masks = [tn_bb]
    out = {"s_bb": s_bb, "s_pos_b": s_pos_b, "tn_bb": tn_bb}
    if include_positive_in_denominator:
        terms.append((s_pos_b * inv_tau)[:, None])
        masks.append(jnp.ones((b, 1), bool))
    if n is not None:
        n_bme = l2_normalize(n, dtype=dt)
        s_bm = jnp.einsum("BE,BME->BM", q_be, n_bme)
        # log(w_im e^{s/τ}) with w_im = exp(α·sg(s)): the weight carries no gradient.
        log_w_bm = jnp.asarray(hard_negative_alpha, dt) * jax.lax.stop_gradient(s_bm)
        terms.append(log_w_bm + s_bm * inv_tau)
        masks.append(jnp.ones(s_bm.shape, bool))
        out["s_bm"] = s_bm
    out["logits"] = jnp.concatenate(terms, axis=-1)
    out["mask"] = jnp.concatenate(masks, axis=-1)
    out["pos_logit_b"] = s_pos_b * inv_tau
    return out


def contrastive_loss(
    q: Array,
    p: Array,
    n: Array | None = None,
    *,
    q_ids: Array | None = None,
    p_ids: Array | None = None,
    temperature: float = 0.05,
    hard_negative_alpha: float = 5.0,
    include_positive_in_denominator: bool = False,
) -> Array:
    """Hard-negative-weighted InfoNCE with false-negative masking (EmbeddingGemma, eq. for L_C).

    For each row i::

        ℓ_i = −log( e^{s(q_i,p_i)/τ} / ( Σ_m w_im e^{s(q_i,n_im)/τ}
                                         + Σ_j TN(i,j) e^{s(q_i,p_j)/τ} [+ e^{s(q_i,p_i)/τ}] ) )

    with ``w_im = exp(α · stop_gradient(s(q_i, n_im)))`` and TN from ``true_negative_mask``. The
    bracketed term is present only when ``include_positive_in_denominator``.

    Args:
      q, p: [B, E] query and positive embeddings (any norm).
      n: hard negatives, [B, E] (M = 1) or [B, M, E], or None.
      q_ids, p_ids: int [B] identities of the query / positive texts (equal id = same text);
        None means all distinct.
      temperature: τ > 0. hard_negative_alpha: α.
    Returns:
      scalar: the mean of ℓ_i over rows whose denominator has at least one term (0 if none has).
    """
    parts = _contrastive_logits(
        q,
        p,
        n,
        q_ids=q_ids,
        p_ids=p_ids,
        temperature=temperature,
        hard_negative_alpha=hard_negative_alpha,
        include_positive_in_denominator=include_positive_in_denominator,
    )
    lse_b, valid_b = _masked_logsumexp(parts["logits"], parts["mask"])
    loss_b = jnp.where(valid_b, lse_b - parts["pos_logit_b"], 0.0)
    count = jnp.sum(valid_b)
    return jnp.sum(loss_b) / jnp.maximum(count, 1).astype(loss_b.dtype)


def spread_out_loss(q: Array, p: Array) -> Array:
    """Global orthogonal regulariser (second moment only).

    ``1/(B(B−1)) Σ_{i≠j} (ŝ(q_i)·ŝ(q_j))² + 1/(B(B−1)) Σ_{i≠j} (ŝ(p_i)·ŝ(p_j))²``; 0 when B = 1.

    Args: q, p: [B, E]. Returns: scalar.
    """
    _check_pair(q, p, "spread_out_loss")
    b = q.shape[0]
    dt = _compute_dtype(q, p)
    if b < 2:
        return jnp.zeros((), dt)
    off_bb = ~jnp.eye(b, dtype=bool)
    total = jnp.zeros((), dt)
    for x in (q, p):
        x_be = l2_normalize(x, dtype=dt)
        g_bb = jnp.einsum("BE,CE->BC", x_be, _gather_rows(x_be))
        total = total + jnp.sum(jnp.where(off_bb, g_bb * g_bb, 0.0)) / (b * (b - 1))
    return total


def distillation_loss(student: Array, teacher: Array, *, distance: str = "squared_l2") -> Array:
    """Embedding-matching distillation: mean over rows of ‖ŝ(student_i) − ŝ(teacher_i)‖².

    ``distance="cosine"`` gives the mean of 1 − cosine instead. When E_t > E_s the teacher is
    truncated to its first E_s dimensions and re-normalised (a Matryoshka teacher); pass projected
    student embeddings (E_s = E_t) for a teacher that is not Matryoshka. No gradient flows into the
    teacher.

    Args:
      student: [..., E_s]; teacher: [..., E_t] with the same leading shape (e.g. [B] or [B, M]).
    Returns: scalar.
    """
    if distance not in DISTANCES:
        raise ValueError(
            f"distillation_loss: distance must be one of {DISTANCES}, got {distance!r}"
        )
    if student.ndim < 2 or student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(
            f"distillation_loss: student [..., E_s] and teacher [..., E_t] need the same leading shape, "
            f"got {student.shape} and {teacher.shape}"
        )
    e_s, e_t = student.shape[-1], teacher.shape[-1]
    if e_t < e_s:
        raise ValueError(
            f"distillation_loss: teacher dim {e_t} < student dim {e_s}; project the student to the "
            "teacher's dimension (model head `distill_projection`)"
        )
    dt = _compute_dtype(student, teacher)
    teacher = jax.lax.stop_gradient(teacher)[..., :e_s]
    s_hat = l2_normalize(student, dtype=dt)
    t_hat = l2_normalize(teacher, dtype=dt)
    if distance == "squared_l2":
        d = jnp.sum(jnp.square(s_hat - t_hat), axis=-1)
    else:
        d = 1.0 - jnp.sum(s_hat * t_hat, axis=-1)
    return jnp.mean(d)


def _is_embedding(x: Any) -> bool:
    """Matryoshka truncates floating arrays with at least 2 axes (embeddings), not ids or scalars."""
    return (
        hasattr(x, "ndim")
        and hasattr(x, "dtype")
        and x.ndim >= 2
        and jnp.issubdtype(x.dtype, jnp.floating)
    )


def matryoshka(
    loss_fn: Callable[..., Array], dims: Sequence[int] = (768, 512, 256, 128)
) -> Callable[..., tuple[Array, dict[int, Array]]]:
    """Matryoshka Representation Learning wrapper.

    Returns ``f`` with ``loss_fn``'s signature: ``f(*args, **kwargs) -> (Σ_d loss_fn on the first d
    dimensions, {d: that value})``. Every floating argument with at least two axes (the
    embeddings, positional or keyword) is truncated to its first d entries on the last axis; ids,
    scalars and None pass through. ``loss_fn`` re-normalises, so truncation is all that is needed.
    """
    dims = tuple(int(d) for d in dims)
    if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"matryoshka: dims must be distinct positive ints, got {dims}")

    def trunc(x: Any, d: int) -> Any:
        if not _is_embedding(x):
            return x
        if x.shape[-1] < d:
            raise ValueError(
                f"matryoshka: dim {d} exceeds the embedding dimension {x.shape[-1]} (dims={dims})"
            )
        return x[..., :d]

    def f(*args: Any, **kwargs: Any) -> tuple[Array, dict[int, Array]]:
        per_dim = {}
        for d in dims:
            a = [trunc(x, d) for x in args]
            kw = {k: trunc(v, d) for k, v in kwargs.items()}
            per_dim[d] = loss_fn(*a, **kw)
        total = sum(per_dim.values())
        return total, per_dim

    return f


def _retrieval_metrics(parts: dict[str, Array]) -> dict[str, Array]:
    """Cosines and top-1 accuracy over each row's denominator candidates (no gradient)."""
    parts = {k: v if v.dtype == bool else jax.lax.stop_gradient(v) for k, v in parts.items()}
    s_pos_b = parts["s_pos_b"]
    neg = [jnp.where(parts["tn_bb"], parts["s_bb"], -jnp.inf)]
    out = {"pos_cosine": jnp.mean(s_pos_b)}
    if "s_bm" in parts:
        neg.append(parts["s_bm"])
        out["hard_negative_cosine"] = jnp.mean(parts["s_bm"])
    hardest_b = jnp.max(jnp.concatenate(neg, axis=-1), axis=-1)
    has_neg_b = jnp.isfinite(hardest_b)
    n_rows = jnp.maximum(jnp.sum(has_neg_b), 1).astype(s_pos_b.dtype)
    out["hardest_negative_cosine"] = jnp.sum(jnp.where(has_neg_b, hardest_b, 0.0)) / n_rows
    # A row is right when its positive beats every negative in its denominator (false negatives
    # — duplicates of the same text — are not candidates).
    out["top1_accuracy"] = jnp.mean((s_pos_b > hardest_b).astype(s_pos_b.dtype))
    return out


def embeddinggemma_loss(
    q: Array,
    p: Array,
    n: Array | None = None,
    *,
    q_ids: Array | None = None,
    p_ids: Array | None = None,
    teacher_q: Array | None = None,
    teacher_p: Array | None = None,
    teacher_n: Array | None = None,
    temperature: float = 0.05,
    hard_negative_alpha: float = 5.0,
    include_positive_in_denominator: bool = False,
    spread_out_weight: float = 1.0,
    distill_weight: float = 1.0,
    matryoshka_dims: Sequence[int] | None = (768, 512, 256, 128),
    distill_distance: str = "squared_l2",
) -> tuple[Array, dict[str, Array]]:
    """The total EmbeddingGemma objective ``L_C^MRL + λ_S L_S^MRL + λ_D L_D``.

    ``L_D = L_Q + L_P+ + L_P−``: distillation of queries, positives and hard negatives, each term
    present when its teacher embeddings are given (not Matryoshka). The keyword names match the
    trainer's ``config.loss`` keys, so ``embeddinggemma_loss(q, p, n, **config.loss)`` works.

    Args:
      q, p: [B, E]; n: [B, E], [B, M, E] or None; q_ids, p_ids: int [B] or None.
      teacher_q, teacher_p: [B, E_t]; teacher_n: n's leading shape with E_t (no gradient).
      matryoshka_dims: the MRL dims (each ≤ E); None means the full dimension only.
    Returns:
      (loss scalar, metrics): ``loss``, ``contrastive``, ``spread_out``, ``distill`` (unweighted
      terms), ``contrastive/d{d}`` and ``spread_out/d{d}`` per Matryoshka dim, ``distill/q|p|n``,
      and, at full dimension, ``pos_cosine``, ``hardest_negative_cosine``, ``hard_negative_cosine``
      (when n is given) and ``top1_accuracy``.
    """
    dims = (q.shape[-1],) if matryoshka_dims is None else tuple(matryoshka_dims)
    c_kwargs = dict(
        q_ids=q_ids,
        p_ids=p_ids,
        temperature=temperature,
        hard_negative_alpha=hard_negative_alpha,
        include_positive_in_denominator=include_positive_in_denominator,
    )
    l_c, c_per_d = matryoshka(contrastive_loss, dims)(q, p, n, **c_kwargs)
    l_s, s_per_d = matryoshka(spread_out_loss, dims)(q, p)

    dt = l_c.dtype
    l_d = jnp.zeros((), dt)
    metrics: dict[str, Array] = {}
    for name, student, teacher in (("q", q, teacher_q), ("p", p, teacher_p), ("n", n, teacher_n)):
        if teacher is None:
            continue
        if student is None:
            raise ValueError("embeddinggemma_loss: teacher_n given without hard negatives n")
        if name == "n" and student.ndim == 2 and teacher.ndim == 3:
            student = student[:, None, :]
        term = distillation_loss(student, teacher, distance=distill_distance)
        metrics[f"distill/{name}"] = term
        l_d = l_d + term

    loss = l_c + spread_out_weight * l_s + distill_weight * l_d
    metrics.update(loss=loss, contrastive=l_c, spread_out=l_s, distill=l_d)
    for d in dims:
        metrics[f"contrastive/d{d}"] = c_per_d[d]
        metrics[f"spread_out/d{d}"] = s_per_d[d]
    parts = _contrastive_logits(q, p, n, **c_kwargs)
    metrics.update(
        _retrieval_metrics({k: v for k, v in parts.items() if k.startswith(("s_", "tn"))})
    )
    return loss, metrics


def embeddinggemma_loss_fn(
    **loss_kwargs: Any,
) -> Callable[[dict[str, Array], Any], tuple[Array, dict[str, Array]]]:
    """`embeddinggemma_loss` as the ``loss_fn(embeddings, extra) -> (loss, metrics)`` that
    `train.gradcache`'s value-and-grad functions take.

    Roles: ``"query"``, ``"positive"`` and optional ``"negative"`` ([B, M] rows). ``extra`` (all
    optional): ``{"q_ids": [B] int, "p_ids": [B] int, "teacher": {"query": [B, E_t],
    "positive": [B, E_t], "negative": [B, M, E_t]}}`` — teacher embeddings precomputed in the data
    or produced in the step by ``embed_batch`` of a frozen teacher. ``loss_kwargs`` are
    ``embeddinggemma_loss``'s weights (``temperature``, ``spread_out_weight``, ...; the trainer
    passes ``**config.loss``).
    """

    def loss_fn(embs: dict[str, Array], extra: Any = None):
        extra = {} if extra is None else extra
        unknown = set(embs) - {"query", "positive", "negative"}
        if unknown:
            raise ValueError(f"embeddinggemma_loss_fn: unknown roles {sorted(unknown)}")
        teacher = extra.get("teacher") or {}
        return embeddinggemma_loss(
            embs["query"],
            embs["positive"],
            embs.get("negative"),
            q_ids=extra.get("q_ids"),
            p_ids=extra.get("p_ids"),
            teacher_q=teacher.get("query"),
            teacher_p=teacher.get("positive"),
            teacher_n=teacher.get("negative"),
            **loss_kwargs,
        )

    return loss_fn
