"""The UL2 stage's pluggable pieces: loss on decoder targets, a tiny UL2 run that lowers held-out
loss, the unbalanced cross-attention warm-up, and extract_encoder -> EmbeddingGemma -> a few
contrastive steps (also from an Orbax checkpoint directory)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from conftest import random_params
from decoder_only import tiny_ul2_config

from embeddinggemma_jax.data.ul2 import ul2_batches
from embeddinggemma_jax.interop import load_sentence_transformer, save_gemma3
from embeddinggemma_jax.model import GLOBAL, LOCAL, EmbeddingGemma, ModelConfig
from embeddinggemma_jax.model.encoder_decoder import (
    EncoderDecoderConfig,
    cross_attention_mask,
    t5gemma_init,
)
from embeddinggemma_jax.model.model import param_shapes
from embeddinggemma_jax.train.ul2 import (
    export_embedder_init,
    extract_encoder,
    init_ul2_params,
    make_ul2_loss_fn,
    ul2_loss,
    with_cross_attention_warmup,
)

CAUSAL = ModelConfig.tiny(bidirectional=False, num_layers=2, layer_types=(LOCAL, GLOBAL))
CONFIG = EncoderDecoderConfig.balanced(CAUSAL)
V = CAUSAL.vocab_size
UL2 = tiny_ul2_config(V)


def _sequences(n: int, seed: int):
    """Learnable token streams: arithmetic progressions over a small alphabet."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start, step, length = rng.integers(3, 60), rng.integers(1, 4), rng.integers(12, 30)
        out.append((3 + (start + step * np.arange(length)) % 60).astype(np.int32))
    return out


def _decoder_only(config: ModelConfig, seed: int = 0) -> dict:
    return random_params(param_shapes(config)["encoder"], 0.05, seed)  # the Transformer's params


def test_loss_matches_optax_and_ignores_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 5)).astype(np.int32)
    weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    ids = np.array([[0, 0, 0, -1, -1], [1, 1, 1, 1, 1]], np.int32)
    loss, metrics = ul2_loss(
        logits, targets, weights, z_loss=1e-2, denoiser_ids_bt=ids, num_denoisers=2
    )
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    log_z = np.asarray(jax.nn.logsumexp(logits, -1))
    real = weights > 0
    np.testing.assert_allclose(metrics["cross_entropy"], ce[real].mean(), rtol=1e-6)
    np.testing.assert_allclose(loss, ce[real].mean() + 1e-2 * (log_z[real] ** 2).mean(), rtol=1e-6)
    np.testing.assert_allclose(
        metrics["ce_sum_by_denoiser"], [ce[0, :3].sum(), ce[1].sum()], rtol=1e-6
    )
    np.testing.assert_array_equal(metrics["tokens_by_denoiser"], [3, 5])
    # Whatever sits at padded target positions does not matter.
    logits2, targets2 = logits.copy(), targets.copy()
    logits2[0, 3:] = 100.0
    targets2[0, 3:] = 7
    loss2, _ = ul2_loss(logits2, targets2, weights, z_loss=1e-2)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)


def test_tiny_ul2_run_lowers_held_out_loss(tmp_path):
    folder = tmp_path / "decoder_only"
    save_gemma3(folder, _decoder_only(CAUSAL), CAUSAL)
    params = init_ul2_params(CONFIG, jax.random.key(0), folder)  # T5Gemma init from a folder
    np.testing.assert_array_equal(
        params["decoder"]["layer_1"]["cross_attn"]["kv"]["w"],
        params["encoder"]["layer_1"]["attn"]["kv"]["w"],
    )
    loss_fn = make_ul2_loss_fn(CONFIG, num_denoisers=len(UL2.denoisers))
    train = list(ul2_batches(_sequences(256, seed=1), UL2, batch_size=16))
    held_out = list(ul2_batches(_sequences(64, seed=2), UL2, batch_size=16, first_index=10**6))
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, batch):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    evaluate = jax.jit(lambda p, b: loss_fn(p, b)[1]["cross_entropy"])

    def held_out_loss(p):
        return float(np.mean([evaluate(p, b) for b in held_out]))

    before = held_out_loss(params)
    opt_state = tx.init(params)
    for _ in range(2):
        for batch in train:
            params, opt_state, metrics = step(params, opt_state, batch)
    after = held_out_loss(params)
    print(f"held-out decoder cross-entropy {before:.3f} -> {after:.3f}")
    assert np.isfinite(after) and after < 0.8 * before
    assert metrics["tokens_by_denoiser"].sum() == metrics["tokens"]


def test_cross_attention_warmup_freezes_the_rest():
    small = CAUSAL.replace(embed_dim=30, num_heads=2, head_dim=8, mlp_dim=44)
    config = EncoderDecoderConfig.unbalanced(CAUSAL, small)
    params = t5gemma_init(_decoder_only(CAUSAL), config, decoder_source_params=_decoder_only(small))
    mask = cross_attention_mask(params)
    tx = with_cross_attention_warmup(optax.adamw(1e-2, weight_decay=0.1), params, steps=2)
    state = tx.init(params)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    current = params
    for k in range(3):
        grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
        updates, state = update(grads, state, current)
        new = optax.apply_updates(current, updates)
        moved = jax.tree.map(
            lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new, current
        )
        for m, c in zip(jax.tree.leaves(moved), jax.tree.leaves(mask)):
            assert m == (c or k >= 2)
        current = new
    with pytest.raises(ValueError, match="no decoder cross-attention"):
        with_cross_attention_warmup(optax.sgd(1.0), {"encoder": params["encoder"]}, steps=1)


def _info_nce(q, p, temperature: float = 0.05):
    logits = q @ p.T / temperature
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.diag(logits))


def test_extract_encoder_drives_embeddinggemma(tmp_path):
    params = t5gemma_init(_decoder_only(CAUSAL, seed=3), CONFIG)
    embedder_config = CONFIG.encoder  # bidirectional, tiny head dims
    out = extract_encoder(params, embedder_config, jax.random.key(1))
    assert jax.tree.map(np.shape, out) == jax.tree.map(
        lambda s: s.shape, param_shapes(embedder_config)
    )
    for a, b in zip(jax.tree.leaves(out["encoder"]), jax.tree.leaves(params["encoder"])):
        np.testing.assert_array_equal(a, b)

    rng = np.random.default_rng(0)
    docs = [rng.integers(3, V - 30, int(rng.integers(8, 20))) for _ in range(6)]
    q_tok = np.zeros((6, 12), np.int32)
    p_tok = np.zeros((6, 20), np.int32)
    for i, d in enumerate(docs):
        q_tok[i, : min(6, d.size)] = d[:6]
        p_tok[i, : d.size] = d
    model = EmbeddingGemma(embedder_config)

    # A few contrastive steps from the extracted params.
    def loss_fn(p):
        return _info_nce(model.apply({"params": p}, q_tok), model.apply({"params": p}, p_tok))

    tx = optax.adam(1e-3)
    step = jax.jit(jax.value_and_grad(loss_fn))
    state, current, losses = tx.init(out), out, []
    for _ in range(4):
        loss, grads = step(current)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
        updates, state = tx.update(grads, state, current)
        current = optax.apply_updates(current, updates)
        losses.append(float(loss))
    assert losses[-1] < losses[0]

    # From an Orbax checkpoint: a CheckpointManager root holding a train-state-like item.
    root = tmp_path / "ckpt"
    with ocp.CheckpointManager(root) as manager:
        state_item = {"step": np.int32(5), "params": params}
        manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state_item)))
        manager.wait_until_finished()
    restored = extract_encoder(root, embedder_config, jax.random.key(1))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(out)):
        np.testing.assert_array_equal(a, b)


def test_export_embedder_init_round_trips(tmp_path, gemma_tokenizer_model):
    params = t5gemma_init(_decoder_only(CAUSAL, seed=4), CONFIG)
    config = CONFIG.encoder
    folder = export_embedder_init(
        params, config, tmp_path / "init", tokenizer=gemma_tokenizer_model, rng=jax.random.key(2)
    )
    loaded_config, loaded, _ = load_sentence_transformer(folder)
    assert loaded_config.bidirectional and loaded_config.head_dims == config.head_dims
    expected = extract_encoder(params, config, jax.random.key(2))
    assert jax.tree.structure(loaded) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_extract_encoder_errors():
    params = {"encoder": _decoder_only(CAUSAL), "decoder": {}}
    with pytest.raises(ValueError, match="must be bidirectional"):
        extract_encoder(params, CAUSAL)
    with pytest.raises(ValueError, match="has shape"):
        extract_encoder(params, CONFIG.encoder.replace(mlp_dim=70))
    with pytest.raises(ValueError, match="no encoder-decoder params"):
        extract_encoder({"params": {"layer_0": {}}}, CONFIG.encoder)
