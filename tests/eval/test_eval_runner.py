"""`evaluate_embedder` on a tiny random model (fast), and on the released checkpoint against a
sentence-transformers evaluation of the same tasks (slow)."""

from __future__ import annotations

import pytest

from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.eval import builtin, evaluate_embedder, tasks


def test_evaluate_embedder_rejects_dims(tiny_embedder, local_tasks):
    with pytest.raises(ValueError, match="outside 1..40"):
        evaluate_embedder(tiny_embedder, local_tasks, [41])


# ------------------------------------------------------------------------------------------
# Real checkpoint: our evaluation equals a sentence-transformers evaluation of the same tasks
# ------------------------------------------------------------------------------------------


def _small_code_search(n_queries: int = 16) -> tasks.RetrievalTask:
    full = builtin.stdlib_code_search()
    short = sorted(full.corpus, key=lambda d: (len(full.corpus[d][1]), d))
    keep_docs = set(short[: 3 * n_queries])
    queries = [q for q in full.queries if set(full.qrels[q]) <= keep_docs][:n_queries]
    return tasks.RetrievalTask(
        name="stdlib-code-search-small",
        corpus={d: full.corpus[d] for d in sorted(keep_docs)},
        queries={q: full.queries[q] for q in queries},
        qrels={q: full.qrels[q] for q in queries},
        query_prompt=full.query_prompt,
    )


@pytest.mark.slow
def test_real_checkpoint_matches_sentence_transformers(real_checkpoint):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(real_checkpoint), device="cpu")

    def st_encode(texts, prompt_name, dim):
        return st.encode(
            list(texts), prompt_name=prompt_name, truncate_dim=dim, normalize_embeddings=True,
            batch_size=16, convert_to_numpy=True,
        )  # fmt: skip

    bitext = builtin.humanize_bitext()
    keep = [i for i, s in enumerate(bitext.subsets) if s in ("en-de_DE", "en-ja_JP")]
    small_bitext = tasks.BitextMiningTask(
        name="humanize-bitext-small",
        sentence1=[bitext.sentence1[i] for i in keep],
        sentence2=[bitext.sentence2[i] for i in keep],
        subsets=[bitext.subsets[i] for i in keep],
    )
    local = [_small_code_search(), small_bitext]
    dims = [768, 128]
    ours = evaluate_embedder(Embedder.from_pretrained(real_checkpoint), local, dims, batch_size=16)
    for task in local:
        reference = task.evaluate(st_encode, dims)
        for dim in dims:
            got = ours["tasks"][task.name]["results"][str(dim)]
            for name, value in reference[dim].items():
                assert got[name] == pytest.approx(value, abs=1e-4), (task.name, dim, name)
