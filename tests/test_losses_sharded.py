"""Global-batch objective on 8 fake CPU devices: with the batch sharded over a ``data`` mesh axis,
the loss (every query sees every device's positives) and its gradients equal the single-device
values, for the loss alone and through GradCache.

The check runs in a subprocess: jax fixes its device count when first initialised, and another
test module in the same pytest worker may already have done that with one device. Run this file
directly (``python tests/test_losses_sharded.py``) to do the check in-process.
"""

import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":  # the child: 8 CPU devices, set before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
B, M, E, E_T = 16, 3, 12, 15
LOSS = dict(
    temperature=0.05, hard_negative_alpha=5.0, spread_out_weight=0.5, distill_weight=0.7,
    matryoshka_dims=(12, 6), include_positive_in_denominator=False,
)  # fmt: skip


def test_global_batch_on_8_fake_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    r = subprocess.run(
        [sys.executable, __file__], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, f"sharded check failed:\n{r.stdout}\n{r.stderr[-6000:]}"
    assert "sharded == single-device: OK" in r.stdout, r.stdout


# ----------------------------------------------------------------------------------------------
# The child
# ----------------------------------------------------------------------------------------------
def _close(got, want, what, rtol=1e-5):
    for path, w in jax.tree_util.tree_leaves_with_path(want):
        g = np.asarray(_get(got, path))
        w = np.asarray(w)
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        np.testing.assert_allclose(
            g, w, rtol=rtol, atol=rtol * scale + 1e-7, err_msg=f"{what}{jax.tree_util.keystr(path)}"
        )


def _get(tree, path):
    for k in path:
        tree = tree[getattr(k, "key", getattr(k, "idx", None))]
    return tree


def _loss_check(mesh, data_sharding):
    from embeddinggemma_jax.losses import embeddinggemma_loss

    rng = np.random.default_rng(0)
    args = (
        rng.standard_normal((B, E)).astype(np.float32),  # q
        rng.standard_normal((B, E)).astype(np.float32),  # p
        rng.standard_normal((B, M, E)).astype(np.float32),  # n
        rng.integers(0, B // 2, B).astype(np.int32),  # q_ids, with duplicates
        rng.integers(0, B // 2, B).astype(np.int32),  # p_ids, with duplicates
        rng.standard_normal((B, E_T)).astype(np.float32),  # teacher q
        rng.standard_normal((B, E_T)).astype(np.float32),  # teacher p
        rng.standard_normal((B, M, E_T)).astype(np.float32),  # teacher n
    )

    def f(q, p, n, q_ids, p_ids, tq, tp, tn):
        return embeddinggemma_loss(
            q, p, n, q_ids=q_ids, p_ids=p_ids, teacher_q=tq, teacher_p=tp, teacher_n=tn, **LOSS
        )

    vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True), compiler_options=FAST)
    one = jax.devices()[0]
    (loss1, met1), g1 = vg(*(jax.device_put(a, one) for a in args))
    sharded = [jax.device_put(a, data_sharding) for a in args]
    assert all(len(a.sharding.device_set) == 8 for a in sharded)
    (loss8, met8), g8 = vg(*sharded)
    assert len(g8[0].sharding.device_set) == 8
    _close(loss8, loss1, "loss")
    _close(met8, met1, "metrics")
    _close(g8, g1, "grads")

    # Global semantics: the per-device (local-batch) losses average to something else.
    local = np.mean([float(f(*(a[d * 2 : d * 2 + 2] for a in args))[0]) for d in range(8)])
    assert abs(local - float(loss1)) > 1e-2, (local, float(loss1))
    print(f"loss {float(loss8):.6f} (local-batch mean would be {local:.6f})")


def _gradcache_check(mesh, data_sharding, chunk_size):
    import flax.linen as nn

    from embeddinggemma_jax.losses import embeddinggemma_loss_fn
    from embeddinggemma_jax.train.gradcache import gradcache_value_and_grad

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, tokens_bt, mask_bt):
            # one_hot, not nn.Embed: a gather from sharded ids needs an explicit out_sharding
            # under Explicit axes (the encoder's business, not GradCache's).
            x_btd = jnp.tanh(nn.Dense(10)(jax.nn.one_hot(tokens_bt, 40)))
            m = mask_bt[..., None].astype(x_btd.dtype)
            return nn.Dense(E)(jnp.sum(x_btd * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0))

    rng = np.random.default_rng(1)

    def role(lead, t):
        mask = np.arange(t) < rng.integers(1, t + 1, lead)[..., None]
        return {
            "tokens": np.where(mask, rng.integers(3, 40, lead + (t,)), 0).astype(np.int32),
            "mask": mask,
        }

    # query and positive share T (one stream of 2B rows), negatives [B, 2] another stream.
    batch = {"query": role((B,), 5), "positive": role((B,), 5), "negative": role((B, 2), 6)}
    extra = {
        "q_ids": rng.integers(0, B // 2, B).astype(np.int32),
        "p_ids": np.arange(B, dtype=np.int32),
        "teacher": {"query": rng.standard_normal((B, E_T)).astype(np.float32)},
    }
    enc = Encoder()
    params = jax.jit(enc.init)(jax.random.key(0), batch["query"]["tokens"], batch["query"]["mask"])
    params = params["params"]

    def embed_fn(p, x):
        return enc.apply({"params": p}, x["tokens"], x["mask"])

    step = jax.jit(
        gradcache_value_and_grad(embed_fn, embeddinggemma_loss_fn(**LOSS), chunk_size=chunk_size),
        compiler_options=FAST,
    )
    one = jax.devices()[0]
    (loss1, met1), g1 = step(jax.device_put(params, one), *jax.device_put((batch, extra), one))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    (loss8, met8), g8 = step(
        jax.device_put(params, replicated), *jax.device_put((batch, extra), data_sharding)
    )
    if 2 * B % chunk_size:  # padded chunks: refused with a clear error under Explicit axes
        explicit = jax.sharding.AxisType.Explicit
        emesh = jax.make_mesh((8,), ("data",), axis_types=(explicit,))
        esharding = jax.sharding.NamedSharding(emesh, jax.sharding.PartitionSpec("data"))
        try:
            step(params, *jax.device_put((batch, extra), esharding))
        except ValueError as e:
            assert "Explicit mesh axis" in str(e), e
        else:
            raise AssertionError("padded chunks under Explicit axes were not refused")
    _close(loss8, loss1, "gradcache loss")
    _close(met8, met1, "gradcache metrics")
    _close(g8, g1, "gradcache grads")


def main():
    assert jax.device_count() == 8, f"need 8 devices, got {jax.devices()}"
    # Auto axes are what embeddinggemma_jax.parallel builds; Explicit is jax.make_mesh's default.
    # Under Explicit axes uneven (padded) chunks are refused, so that case uses a dividing chunk.
    for axis_type, chunk in ((jax.sharding.AxisType.Auto, 6), (jax.sharding.AxisType.Explicit, 8)):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        print(axis_type)
        _loss_check(mesh, data_sharding)
        _gradcache_check(mesh, data_sharding, chunk)
    print("sharded == single-device: OK")


if __name__ == "__main__":
    main()
