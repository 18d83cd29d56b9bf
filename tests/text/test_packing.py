"""Sequence packing: the bin packing (every text exactly once, rows within capacity, tight), the
row layout (segment ids, per-text positions), and the Embedder's packed path giving the same
embeddings as one text per row."""

import inspect
import json
import textwrap

import jax
import numpy as np
import pytest
from conftest import train_tiny_tokenizer

from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.model import ModelConfig, init_params
from embeddinggemma_jax.text.packing import best_fit_decreasing, pack_rows


@pytest.mark.parametrize("seed", range(5))
def test_best_fit_decreasing_places_every_item_once_within_capacity(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 65, rng.integers(1, 300)).tolist()
    rows = best_fit_decreasing(lengths, 64)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    fills = [sum(lengths[i] for i in r) for r in rows]
    assert max(fills) <= 64 and fills == sorted(fills, reverse=True)
    # Tight: no two rows could be merged, so fewer than twice the lower bound.
    assert len(rows) < 2 * np.ceil(sum(lengths) / 64) + 1
    assert all(a + b > 64 for k, a in enumerate(fills) for b in fills[k + 1 :])


def test_best_fit_decreasing_errors_and_edges():
    assert best_fit_decreasing([], 8) == []
    assert best_fit_decreasing([8, 8], 8) == [[0], [1]]
    assert best_fit_decreasing([5, 3, 4, 4], 8) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="item 1 has 9 tokens, over the row capacity 8"):
        best_fit_decreasing([2, 9], 8)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        best_fit_decreasing([1], 0)


def test_pack_rows_layout():
    seqs = [[5, 6, 7], [8, 9], [10]]
    tokens, segments, positions = pack_rows(seqs, [[0, 2], [1]], 5, num_rows=3, pad_id=0)
    np.testing.assert_array_equal(tokens, [[5, 6, 7, 10, 0], [8, 9, 0, 0, 0], [0] * 5])
    np.testing.assert_array_equal(segments, [[1, 1, 1, 2, 0], [1, 1, 0, 0, 0], [0] * 5])
    np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 0], [0, 1, 0, 0, 0], [0] * 5])
    with pytest.raises(ValueError, match="row 0 holds 4\\+ tokens, over the row length 3"):
        pack_rows(seqs, [[0, 2]], 3)
    with pytest.raises(ValueError, match="2 rows do not fit num_rows=1"):
        pack_rows(seqs, [[0], [1]], 5, num_rows=1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    tok = train_tiny_tokenizer(root, "\n".join(inspect.getdoc(m) for m in (json, textwrap)))
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size)
    return cfg, init_params(cfg, jax.random.key(3)), tok


def test_embedder_packed_equals_one_text_per_row(tiny_model):
    cfg, params, tok = tiny_model
    docs = [
        inspect.getdoc(f) or "" for f in (json.dumps, json.loads, textwrap.wrap, textwrap.dedent)
    ]
    texts = ["", "a", "short query", *docs, *(d[:n] for d in docs for n in (15, 40, 90))]
    lengths = [len(x) for x in tok.encode(texts, max_length=64)]
    assert min(lengths) == 2 and max(lengths) == 64 and len(set(lengths)) > 8
    plain = Embedder(cfg, params, tok, max_length=64, pack_length=None)
    packed = Embedder(cfg, params, tok, max_length=64, pack_length=32)
    assert packed.pack_length == 32 and plain.pack_length is None
    calls = []
    forward = packed._forward_packed
    packed._forward_packed = lambda *a: calls.append(a[1].shape) or forward(*a)
    a = plain.encode(texts, batch_size=4)
    b = packed.encode(texts, batch_size=4)
    np.testing.assert_allclose(b, a, atol=2e-6, rtol=0)
    short = sum(n for n in lengths if n <= 32)
    padded = sum(r * t for r, t in calls)
    assert short <= padded < 1.5 * short  # one-per-row would pad these to 16/32: ~2x
    dim24 = packed.encode(texts, dim=24, batch_size=3)
    np.testing.assert_allclose(
        dim24, a[:, :24] / np.linalg.norm(a[:, :24], axis=1, keepdims=True), atol=2e-6
    )


def test_full_batches_compile_once_per_length_and_embed_the_same(tiny_model):
    cfg, params, tok = tiny_model
    # 11 short texts (one bucket: a batch of 8, then 3) and 5 of the longest bucket.
    texts = [f"query {i}" for i in range(11)] + [inspect.getdoc(json.dumps)] * 5
    ref = Embedder(cfg, params, tok, max_length=64, pack_length=None)
    full = Embedder(cfg, params, tok, max_length=64, pack_length=None, full_batches=True)
    shapes = {ref: [], full: []}  # (rows, length) of each call's tokens
    for e in (ref, full):
        forward = e._forward
        e._forward = lambda *a, f=forward, e=e: shapes[e].append(a[1].shape) or f(*a)
    np.testing.assert_allclose(full.encode(texts, batch_size=8), ref.encode(texts, batch_size=8),
                               atol=2e-6, rtol=0)  # fmt: skip
    assert {rows for rows, _ in shapes[full]} == {8}  # one program per length bucket
    assert len(set(shapes[ref])) > len(set(shapes[full])) == 2  # short batches: their own


def test_embedder_pack_length_checked(tiny_model):
    cfg, params, tok = tiny_model
    with pytest.raises(ValueError, match="pack_length must be an int >= 2, None or 'auto'"):
        Embedder(cfg, params, tok, pack_length=1)
    assert Embedder(cfg, params, tok, max_length=64, pack_length=512).pack_length == 64
    assert Embedder(cfg, params, tok, max_length=64).pack_length == 64  # auto on CPU
