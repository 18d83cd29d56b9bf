"""Real checkpoint: our Embedder against sentence-transformers on the same texts and prompts."""

import numpy as np
import pytest
from texts import PARITY_TEXTS

from embeddinggemma_jax import Embedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(real_checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(real_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def ours(real_checkpoint):
    return Embedder.from_pretrained(real_checkpoint)


# The reference encodes one text per batch: no padding anywhere (and no 2,048-token padded batch
# to pay for on CPU).
REF = dict(batch_size=1)


@pytest.fixture(scope="module")
def reference_query(reference):
    return reference.encode(PARITY_TEXTS, prompt_name="query", **REF)


# Our float32 query embeddings of every parity text, computed once: its longest texts (one
# truncated at 2,048 tokens) are the costly forward passes on CPU.
@pytest.fixture(scope="module")
def ours_query(ours):
    return ours.encode(PARITY_TEXTS, prompt_name="query", batch_size=16)


def _cosines(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def test_token_ids_equal_reference(ours, reference):
    texts = [ours.prompts["query"] + t for t in PARITY_TEXTS]
    ref = reference.tokenize(texts)
    got = ours.tokenizer.encode(texts, max_length=ours.max_length)
    for i, ids in enumerate(got):
        n = int(ref["attention_mask"][i].sum())
        assert ids.tolist() == ref["input_ids"][i, :n].tolist(), PARITY_TEXTS[i][:60]


def test_float32_query_embeddings(ours_query, reference_query):
    assert len(PARITY_TEXTS) >= 50
    emb = ours_query
    assert emb.shape == reference_query.shape and emb.dtype == np.float32
    cos = _cosines(emb, reference_query)
    assert cos.min() >= 0.99999, (cos.min(), PARITY_TEXTS[int(cos.argmin())][:80])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dim", [512, 256, 128])
def test_matryoshka_dims(ours, reference, dim):
    ref = reference.encode(PARITY_TEXTS[:20], prompt_name="query", truncate_dim=dim, **REF)
    emb = ours.encode(PARITY_TEXTS[:20], prompt_name="query", dim=dim, batch_size=16)
    assert emb.shape == (20, dim)
    assert _cosines(emb, ref).min() >= 0.99999


def test_documents_with_titles(ours, reference):
    texts, titles = PARITY_TEXTS[10:26], [None, "", "Paris", "機械学習"] * 4
    prompts = [f"title: {t or 'none'} | text: " for t in titles]
    ref = np.stack([reference.encode([x], prompt=p, **REF)[0] for x, p in zip(texts, prompts)])
    emb = ours.encode_document(texts, titles=titles, batch_size=16)
    assert _cosines(emb, ref).min() >= 0.99999


def test_bfloat16(real_checkpoint, reference_query):
    bf16 = Embedder.from_pretrained(real_checkpoint, dtype="bfloat16")
    emb = bf16.encode(PARITY_TEXTS, prompt_name="query", batch_size=16)
    cos = _cosines(emb, reference_query)
    assert cos.min() >= 0.999, (cos.min(), PARITY_TEXTS[int(cos.argmin())][:80])


def test_save_pretrained_round_trip(ours, ours_query, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    folder = ours.save_pretrained(tmp_path_factory.mktemp("export") / "model")
    reloaded = SentenceTransformer(str(folder), device="cpu")
    keep = [*range(12), len(PARITY_TEXTS) - 2, len(PARITY_TEXTS) - 1]
    texts = [PARITY_TEXTS[i] for i in keep]
    cos = _cosines(ours_query[keep], reloaded.encode(texts, prompt_name="query", **REF))
    assert cos.min() >= 0.99999
    again = Embedder.from_pretrained(folder)
    import jax

    for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(ours.params) == jax.tree.structure(again.params)
    assert again.prompts == ours.prompts and again.max_length == ours.max_length
