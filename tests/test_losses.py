"""The training objective against independent NumPy implementations written here from the formulas
of the losses issue, finite differences, and its invariances."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embeddinggemma_jax.losses import (
    contrastive_loss,
    distillation_loss,
    embeddinggemma_loss,
    matryoshka,
    spread_out_loss,
)

TAU, ALPHA = 0.05, 5.0

# Eager dispatch compiles every primitive anew for each shape (seconds on this CPU); jit compiles
# each call once. Ids stay traced arrays, as in the train step.
contrastive = jax.jit(
    contrastive_loss,
    static_argnames=("temperature", "hard_negative_alpha", "include_positive_in_denominator"),
)
spread_out = jax.jit(spread_out_loss)
distillation = jax.jit(distillation_loss, static_argnames=("distance",))
objective = jax.jit(
    embeddinggemma_loss,
    static_argnames=(
        "temperature", "hard_negative_alpha", "include_positive_in_denominator", "spread_out_weight",
        "distill_weight", "matryoshka_dims", "distill_distance",
    ),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# NumPy references (float64, direct formulas: explicit loops, plain exp/log, no log-sum-exp)
# ----------------------------------------------------------------------------------------------
def np_unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_contrastive_rows(
    q, p, n=None, q_ids=None, p_ids=None, tau=TAU, alpha=ALPHA, incl=False, w=None
):
    """Per-row ℓ_i (None where the denominator is empty). ``w`` [B, M] overrides w_im."""
    q, p = np_unit(q), np_unit(p)
    b = len(q)
    q_ids = np.arange(b) if q_ids is None else np.asarray(q_ids)
    p_ids = np.arange(b) if p_ids is None else np.asarray(p_ids)
    if n is None:
        n = np.zeros((b, 0, q.shape[1]))
    elif np.ndim(n) == 2:
        n = np.asarray(n)[:, None, :]
    n = np_unit(n) if n.shape[1] else n
    rows = []
    for i in range(b):
        pos = np.exp(q[i] @ p[i] / tau)
        den = []
        for m in range(n.shape[1]):
            s = q[i] @ n[i, m]
            w_im = np.exp(alpha * s) if w is None else w[i, m]
            den.append(w_im * np.exp(s / tau))
        for j in range(b):
            if q_ids[i] != q_ids[j] and p_ids[i] != p_ids[j]:
                den.append(np.exp(q[i] @ p[j] / tau))
        if incl:
            den.append(pos)
        rows.append(-np.log(pos / np.sum(den)) if den else None)
    return rows


def np_contrastive(*args, **kwargs):
    rows = [r for r in np_contrastive_rows(*args, **kwargs) if r is not None]
    return float(np.mean(rows)) if rows else 0.0


def np_hard_weights(q, n, alpha=ALPHA):
    n = np.asarray(n)[:, None, :] if np.ndim(n) == 2 else np.asarray(n)
    return np.exp(alpha * np.einsum("be,bme->bm", np_unit(q), np_unit(n)))


def np_spread_out(q, p):
    b = len(q)
    if b == 1:
        return 0.0
    total = 0.0
    for x in (np_unit(q), np_unit(p)):
        total += sum((x[i] @ x[j]) ** 2 for i in range(b) for j in range(b) if i != j) / (
            b * (b - 1)
        )
    return total


def np_distill(student, teacher, distance="squared_l2"):
    s = np_unit(student)
    t = np_unit(np.asarray(teacher)[..., : s.shape[-1]])
    if distance == "squared_l2":
        return float(np.mean(np.sum((s - t) ** 2, axis=-1)))
    return float(np.mean(1.0 - np.sum(s * t, axis=-1)))


def np_total(q, p, n, q_ids, p_ids, tq, tp, tn, dims, lam_s, lam_d, incl, distance):
    lc = sum(np_contrastive(q[:, :d], p[:, :d], n[..., :d], q_ids, p_ids, incl=incl) for d in dims)
    ls = sum(np_spread_out(q[:, :d], p[:, :d]) for d in dims)
    ld = np_distill(q, tq, distance) + np_distill(p, tp, distance) + np_distill(n, tn, distance)
    return lc + lam_s * ls + lam_d * ld


# ----------------------------------------------------------------------------------------------
def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def dup_ids(rng, b):
    """Ids with duplicates (about half the rows share an id with another row)."""
    return rng.integers(0, max(b // 2, 1), b).astype(np.int32)


def close(a, b, tol=1e-6):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol)


CASES = list(itertools.product([None, 1, 3], [False, True]))  # M (None: no negatives / [B, E])


@pytest.mark.parametrize("m,incl", CASES)
@pytest.mark.parametrize("ids", ["none", "dup"])
def test_contrastive_matches_numpy(m, incl, ids):
    rng = np.random.default_rng(hash((m, incl, ids)) % 2**32)
    b, e = 9, 13
    q, p = rand(rng, b, e), rand(rng, b, e)
    # M = 1 is passed as [B, E] (the paper's layout); M = 3 as [B, M, E].
    n = None if m is None else (rand(rng, b, e) if m == 1 else rand(rng, b, m, e))
    q_ids = p_ids = None
    if ids == "dup":
        q_ids, p_ids = dup_ids(rng, b), dup_ids(rng, b)
    got = contrastive(q, p, n, q_ids=q_ids, p_ids=p_ids, include_positive_in_denominator=incl)
    assert got.dtype == jnp.float32
    close(got, np_contrastive(q, p, n, q_ids, p_ids, incl=incl))


def test_contrastive_m1_layouts_agree():
    rng = np.random.default_rng(1)
    q, p, n = rand(rng, 6, 8), rand(rng, 6, 8), rand(rng, 6, 8)
    assert contrastive(q, p, n) == contrastive(q, p, n[:, None, :])


def test_contrastive_temperature_and_alpha_are_used():
    rng = np.random.default_rng(2)
    q, p, n = rand(rng, 7, 10), rand(rng, 7, 10), rand(rng, 7, 2, 10)
    for tau, alpha in [(0.02, 0.0), (0.1, 2.5), (0.01, 5.0)]:
        got = contrastive(q, p, n, temperature=tau, hard_negative_alpha=alpha)
        close(got, np_contrastive(q, p, n, tau=tau, alpha=alpha))


def test_spread_out_matches_numpy():
    rng = np.random.default_rng(3)
    for b in (1, 2, 11):
        q, p = rand(rng, b, 9), rand(rng, b, 9)
        close(spread_out(q, p), np_spread_out(q, p))


@pytest.mark.parametrize("distance", ["squared_l2", "cosine"])
@pytest.mark.parametrize("e_t", [10, 17])  # equal dims, and a Matryoshka teacher truncated to E_s
def test_distillation_matches_numpy(distance, e_t):
    rng = np.random.default_rng(e_t)
    s, t = rand(rng, 8, 10), rand(rng, 8, e_t)
    close(distillation(s, t, distance=distance), np_distill(s, t, distance))
    s3, t3 = rand(rng, 8, 3, 10), rand(rng, 8, 3, e_t)  # hard negatives [B, M, E]
    close(distillation(s3, t3, distance=distance), np_distill(s3, t3, distance))


def test_distillation_errors():
    with pytest.raises(ValueError, match="teacher dim 4 < student dim 6"):
        distillation_loss(jnp.ones((2, 6)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="distance"):
        distillation_loss(jnp.ones((2, 6)), jnp.ones((2, 6)), distance="l1")


def test_matryoshka_sums_truncated_losses():
    rng = np.random.default_rng(4)
    q, p, n = rand(rng, 7, 16), rand(rng, 7, 16), rand(rng, 7, 3, 16)
    q_ids = np.array([0, 1, 2, 0, 3, 4, 5], np.int32)
    dims = (16, 8, 5)
    mrl = jax.jit(
        lambda q, p, n, ids: matryoshka(contrastive_loss, dims)(
            q, p, n=n, q_ids=ids, temperature=0.07
        )
    )
    total, per = mrl(q, p, n, q_ids)
    assert set(per) == set(dims)
    for d in dims:
        close(per[d], np_contrastive(q[:, :d], p[:, :d], n[..., :d], q_ids, tau=0.07))
    close(total, sum(float(v) for v in per.values()))
    total_s, _ = jax.jit(matryoshka(spread_out_loss, dims))(q, p)
    close(total_s, sum(np_spread_out(q[:, :d], p[:, :d]) for d in dims))
    with pytest.raises(ValueError, match="exceeds the embedding dimension 16"):
        matryoshka(spread_out_loss, (32,))(q, p)
    with pytest.raises(ValueError, match="distinct positive"):
        matryoshka(spread_out_loss, (8, 8))


@pytest.mark.parametrize("m,incl", [(1, False), (3, True)])
@pytest.mark.parametrize("distance", ["squared_l2", "cosine"])
def test_total_and_metrics_match_numpy(m, incl, distance):
    rng = np.random.default_rng(m + 10 * incl)
    b, e, e_t = 8, 12, 15
    q, p, n = rand(rng, b, e), rand(rng, b, e), rand(rng, b, m, e)
    tq, tp, tn = rand(rng, b, e_t), rand(rng, b, e_t), rand(rng, b, m, e_t)
    q_ids, p_ids = dup_ids(rng, b), dup_ids(rng, b)
    dims, lam_s, lam_d = (12, 6, 4), 0.3, 0.7
    loss, met = objective(
        q, p, n, q_ids=q_ids, p_ids=p_ids, teacher_q=tq, teacher_p=tp, teacher_n=tn,
        temperature=TAU, hard_negative_alpha=ALPHA, include_positive_in_denominator=incl,
        spread_out_weight=lam_s, distill_weight=lam_d, matryoshka_dims=dims, distill_distance=distance,
    )  # fmt: skip
    close(loss, np_total(q, p, n, q_ids, p_ids, tq, tp, tn, dims, lam_s, lam_d, incl, distance))
    close(met["loss"], float(loss))
    for d in dims:
        close(
            met[f"contrastive/d{d}"],
            np_contrastive(q[:, :d], p[:, :d], n[..., :d], q_ids, p_ids, incl=incl),
        )
        close(met[f"spread_out/d{d}"], np_spread_out(q[:, :d], p[:, :d]))
    for k, s, t in (("q", q, tq), ("p", p, tp), ("n", n, tn)):
        close(met[f"distill/{k}"], np_distill(s, t, distance))
    # Retrieval metrics at full dimension over each row's denominator candidates.
    qh, ph, nh = np_unit(q), np_unit(p), np_unit(n)
    s_bb, s_bm = qh @ ph.T, np.einsum("be,bme->bm", qh, nh)
    tn_bb = (q_ids[:, None] != q_ids[None, :]) & (p_ids[:, None] != p_ids[None, :])
    hardest = [max([s_bb[i, j] for j in range(b) if tn_bb[i, j]] + list(s_bm[i])) for i in range(b)]
    close(met["pos_cosine"], np.mean(np.diag(s_bb)))
    close(met["hard_negative_cosine"], np.mean(s_bm))
    close(met["hardest_negative_cosine"], np.mean(hardest))
    close(met["top1_accuracy"], np.mean(np.diag(s_bb) > np.array(hardest)))


def test_total_without_negatives_or_teacher():
    rng = np.random.default_rng(5)
    q, p = rand(rng, 6, 8), rand(rng, 6, 8)
    loss, met = objective(q, p, matryoshka_dims=None, spread_out_weight=0.5)
    close(loss, np_contrastive(q, p) + 0.5 * np_spread_out(q, p))
    assert float(met["distill"]) == 0.0 and "hard_negative_cosine" not in met


# ----------------------------------------------------------------------------------------------
# Gradients: finite differences in float64 on a tiny case
# ----------------------------------------------------------------------------------------------
def fd_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        g[idx] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("incl", [False, True])
def test_contrastive_gradient_finite_differences(incl):
    rng = np.random.default_rng(6)
    b, m, e = 4, 2, 5
    q, p, n = (rng.standard_normal(s) for s in [(b, e), (b, e), (b, m, e)])
    q_ids, p_ids = np.array([0, 1, 0, 2]), np.array([0, 1, 2, 1])
    w = np_hard_weights(q, n)  # the weights at the evaluation point: constants (stop-gradient)
    kw = dict(q_ids=q_ids, p_ids=p_ids, incl=incl, w=w)
    with jax.enable_x64(True):
        gq, gp, gn = jax.jit(
            jax.grad(
                lambda q, p, n: contrastive(
                    q, p, n, q_ids=q_ids, p_ids=p_ids, include_positive_in_denominator=incl
                ),
                argnums=(0, 1, 2),
            )
        )(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n))
        assert gq.dtype == jnp.float64
    close(gq, fd_grad(lambda x: np_contrastive(x, p, n, **kw), q), 1e-6)
    close(gp, fd_grad(lambda x: np_contrastive(q, x, n, **kw), p), 1e-6)
    close(gn, fd_grad(lambda x: np_contrastive(q, p, x, **kw), n), 1e-6)
    # w_im carries no gradient: differentiating through w as well gives a different answer.
    full = fd_grad(lambda x: np_contrastive(q, p, x, q_ids=q_ids, p_ids=p_ids, incl=incl), n)
    assert np.max(np.abs(full - np.asarray(gn))) > 1e-2
    # float32 gradients agree with the float64 ones.
    g32 = jax.jit(jax.grad(
        lambda n: contrastive(
            q.astype(np.float32), p.astype(np.float32), n, q_ids=q_ids, p_ids=p_ids,
            include_positive_in_denominator=incl,
        )
    ))(n.astype(np.float32))  # fmt: skip
    np.testing.assert_allclose(g32, gn, rtol=1e-4, atol=1e-5)


def test_spread_out_and_distillation_gradients_finite_differences():
    rng = np.random.default_rng(7)
    q, p = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    t = rng.standard_normal((4, 7))
    with jax.enable_x64(True):
        gq, gp = jax.jit(jax.grad(spread_out_loss, argnums=(0, 1)))(jnp.asarray(q), jnp.asarray(p))
        gs_l2, gt = jax.jit(jax.grad(distillation_loss, argnums=(0, 1)))(
            jnp.asarray(q), jnp.asarray(t)
        )
        gs_cos = jax.jit(jax.grad(lambda s: distillation(s, jnp.asarray(t), distance="cosine")))(
            jnp.asarray(q)
        )
    close(gq, fd_grad(lambda x: np_spread_out(x, p), q))
    close(gp, fd_grad(lambda x: np_spread_out(q, x), p))
    close(gs_l2, fd_grad(lambda x: np_distill(x, t), q))
    close(gs_cos, fd_grad(lambda x: np_distill(x, t, "cosine"), q))
    assert np.all(np.asarray(gt) == 0.0)  # no gradient into the teacher


def test_hard_negative_weight_carries_no_gradient():
    """The gradient equals that of the same loss with w_im fed in as constants, for any α."""
    rng = np.random.default_rng(8)
    q, p, n = rand(rng, 5, 6), rand(rng, 5, 6), rand(rng, 5, 2, 6)

    def with_const_w(q, n, log_w):
        qh = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
        ph = p / jnp.linalg.norm(p, axis=-1, keepdims=True)
        nh = n / jnp.linalg.norm(n, axis=-1, keepdims=True)
        s_bb = qh @ ph.T / TAU
        s_bm = jnp.einsum("be,bme->bm", qh, nh) / TAU + log_w
        logits = jnp.concatenate([jnp.where(jnp.eye(5, dtype=bool), -jnp.inf, s_bb), s_bm], -1)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.diag(s_bb))

    log_w = np.log(np_hard_weights(q, n))
    g_ref = jax.jit(jax.grad(with_const_w, argnums=(0, 1)))(q, n, jnp.asarray(log_w, jnp.float32))
    g = jax.jit(jax.grad(lambda q, n: contrastive(q, p, n), argnums=(0, 1)))(q, n)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------
@jax.jit
def _all_losses(q, p, n, q_ids, p_ids, t):
    out = {
        "contrastive": contrastive(q, p, n, q_ids=q_ids, p_ids=p_ids),
        "contrastive_incl": contrastive(
            q, p, n, q_ids=q_ids, p_ids=p_ids, include_positive_in_denominator=True
        ),
        "spread_out": spread_out(q, p),
        "distill": distillation(q, t),
        "distill_cos": distillation(p, t, distance="cosine"),
    }
    total, met = objective(q, p, n, q_ids=q_ids, p_ids=p_ids, teacher_q=t, matryoshka_dims=(10, 4))
    out["total"] = total
    out.update(met)
    return out


def _random_batch(seed: int, b: int, num_negatives: int):
    """The generator and a random batch (q, p, n, q_ids, p_ids, teacher) for `_all_losses`."""
    rng = np.random.default_rng(seed)
    q, p = rand(rng, b, 10), rand(rng, b, 10)
    n, t = rand(rng, b, num_negatives, 10), rand(rng, b, 12)
    return rng, (q, p, n, dup_ids(rng, b), dup_ids(rng, b), t)


def test_permutation_invariance():
    rng, (q, p, n, q_ids, p_ids, t) = _random_batch(9, 10, 3)
    b = 10
    base = _all_losses(q, p, n, q_ids, p_ids, t)
    perm = rng.permutation(b)
    got = _all_losses(q[perm], p[perm], n[perm], q_ids[perm], p_ids[perm], t[perm])
    # Permuting the hard negatives of a row among themselves changes nothing either.
    got_m = _all_losses(q, p, n[:, ::-1], q_ids, p_ids, t)
    for k in base:
        np.testing.assert_allclose(got[k], base[k], rtol=1e-6, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(got_m[k], base[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_scale_invariance():
    rng, (q, p, n, q_ids, p_ids, t) = _random_batch(10, 8, 2)
    base = _all_losses(q, p, n, q_ids, p_ids, t)

    def scale(x):
        return x * np.exp(rng.uniform(-3, 3, x.shape[:-1] + (1,))).astype(np.float32)

    got = _all_losses(scale(q), scale(p), scale(n), q_ids, p_ids, scale(t))
    for k in base:
        np.testing.assert_allclose(got[k], base[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_duplicated_positive_is_not_a_negative():
    """Row 2's positive is the same text as row 0's: with p_ids saying so, each of the two rows
    drops exactly the other's e^{s/τ} term from its denominator, and nothing else changes."""
    rng = np.random.default_rng(11)
    b, e = 5, 7
    q, p = rand(rng, b, e), rand(rng, b, e)
    p[2] = p[0]
    p_ids = np.array([0, 1, 0, 3, 4], np.int32)
    naive = float(contrastive(q, p))
    masked = float(contrastive(q, p, p_ids=p_ids))
    qh, ph = np_unit(q), np_unit(p)
    expz = np.exp(qh @ ph.T / TAU)
    diff = 0.0
    for i, dup in ((0, 2), (2, 0)):
        den_masked = sum(expz[i, j] for j in range(b) if j not in (i, dup))
        diff += np.log((den_masked + expz[i, dup]) / den_masked)
    np.testing.assert_allclose(naive - masked, diff / b, rtol=1e-5)
    assert naive - masked > 1e-3
    # The same holds for a repeated query text (q_ids) with different positives.
    q2 = q.copy()
    q2[3] = q2[1]
    q_ids = np.array([0, 1, 2, 1, 4], np.int32)
    masked_q = float(contrastive(q2, p, p_ids=p_ids, q_ids=q_ids))
    close(masked_q, np_contrastive(q2, p, None, q_ids, p_ids))
    assert abs(masked_q - float(contrastive(q2, p, p_ids=p_ids))) > 1e-3


# ----------------------------------------------------------------------------------------------
# Numerical safety: float32, no NaN/inf
# ----------------------------------------------------------------------------------------------
def _finite_value_and_grads(q, p, n=None, **kw):
    def f(q, p, n):
        loss, _ = objective(q, p, n, teacher_q=q + 1.0, matryoshka_dims=None, **kw)
        return loss

    argnums = (0, 1, 2) if n is not None else (0, 1)
    loss, grads = jax.jit(jax.value_and_grad(f, argnums=argnums))(q, p, n)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss)), loss
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), g
    return float(loss)


@pytest.mark.parametrize("incl", [False, True])
def test_batch_of_one(incl):
    rng = np.random.default_rng(12)
    q, p, n = rand(rng, 1, 6), rand(rng, 1, 6), rand(rng, 1, 2, 6)
    kw = dict(include_positive_in_denominator=incl)
    # No hard negatives and no other row: the denominator is empty (or the positive alone).
    assert float(contrastive(q, p, **kw)) == 0.0
    assert float(spread_out(q, p)) == 0.0
    _finite_value_and_grads(q, p, **kw)
    close(
        _finite_value_and_grads(q, p, n, **kw) - np_distill(q, q + 1.0),
        np_contrastive(q, p, n, incl=incl),
    )


@pytest.mark.parametrize("tau", [0.05, 0.01])
def test_identical_embeddings_and_small_temperature(tau):
    rng = np.random.default_rng(13)
    v = rand(rng, 1, 16)
    q = p = np.repeat(v, 6, axis=0)
    n = np.repeat(v[:, None], 6, axis=0).repeat(3, axis=1)
    kw = dict(temperature=tau)
    got = _finite_value_and_grads(q, p, n, **kw)
    # All similarities are 1: ℓ = log(M e^{α+1/τ} + (B-1) e^{1/τ}) - 1/τ = log(M e^α + B - 1).
    close(
        got - float(spread_out(q, p)) - np_distill(q, q + 1.0), np.log(3 * np.exp(ALPHA) + 5), 1e-5
    )
    # τ = 0.01 with large random logits (|s/τ| up to 100, e^{100} overflows float32).
    q2, p2, n2 = rand(rng, 16, 8), rand(rng, 16, 8), rand(rng, 16, 3, 8)
    p2[:8] = q2[:8]
    loss = contrastive(q2, p2, n2, temperature=0.01, hard_negative_alpha=20.0)
    np.testing.assert_allclose(
        float(loss), np_contrastive(q2, p2, n2, tau=0.01, alpha=20.0), rtol=1e-5
    )


def test_zero_vector_and_bfloat16_inputs_are_safe():
    q = np.zeros((3, 4), np.float32)
    p = np.eye(3, 4, dtype=np.float32)
    _finite_value_and_grads(q, p)
    loss = contrastive(jnp.asarray(p, jnp.bfloat16), jnp.asarray(p, jnp.bfloat16))
    assert loss.dtype == jnp.float32
    close(loss, np_contrastive(p, p))


def test_input_validation():
    with pytest.raises(ValueError, match="q and p must both be"):
        contrastive_loss(jnp.ones((3, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="n must be"):
        contrastive_loss(jnp.ones((3, 4)), jnp.ones((3, 4)), jnp.ones((3, 2, 5)))
    with pytest.raises(ValueError, match="q_ids must have shape"):
        contrastive_loss(jnp.ones((3, 4)), jnp.ones((3, 4)), q_ids=jnp.arange(4))
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(jnp.ones((3, 4)), jnp.ones((3, 4)), temperature=0.0)
