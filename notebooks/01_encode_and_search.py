# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-ORG/embeddinggemma-jax/blob/main/notebooks/01_encode_and_search.ipynb)
#
# # Encode and search with EmbeddingGemma
#
# Load `google/embeddinggemma-300m` in JAX, embed queries and documents with their prompts, search
# by dot product, and see what the Matryoshka widths (768, 512, 256, 128) keep.
#
# The documents are real text: docstrings of Python standard-library functions, read with
# `inspect`. The model is gated on the Hugging Face hub: accept its licence there and log in
# below (or point `EMBEDDINGGEMMA_300M` at a local sentence-transformers folder).
#
# Without an accelerator and without `EMBEDDINGGEMMA_300M`, or with
# `EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1`, the notebook runs a tiny random model with a tokenizer
# trained on the same docstrings: the same calls in seconds, but its rankings mean nothing.

# %% tags=["colab"]
# Colab only: get the code and its dependencies, then log in to the hub.
# !git clone --depth 1 https://github.com/YOUR-ORG/embeddinggemma-jax
# %cd embeddinggemma-jax
# !pip install -q -e .
from huggingface_hub import notebook_login

notebook_login()

# %%
import csv
import inspect
import json
import shutil
import statistics
import textwrap
import urllib.parse

import jax
import numpy as np

from embeddinggemma_jax import Embedder, notebook
from embeddinggemma_jax.cache import enable_compilation_cache

# Tiny mode: forced by EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1 (=0 forces the real model); by
# default on when there is no accelerator and no local checkpoint (EMBEDDINGGEMMA_300M).
TINY, MODEL, OUT = notebook.setup("01")  # OUT: a fresh folder for this run's files
enable_compilation_cache()  # a rerun skips most compilation

# %% [markdown]
# ## Documents: standard-library docstrings

# %%
docs, titles = [], []
for module in (shutil, textwrap, statistics, csv, json, urllib.parse):
    for name, f in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("_") and f.__module__ == module.__name__ and f.__doc__:
            docs.append(" ".join(inspect.cleandoc(f.__doc__).split("\n\n")[0].split()))
            titles.append(f"{module.__name__}.{name}")
print(f"{len(docs)} documents, e.g. {titles[0]}: {docs[0]!r}")

queries = [
    "how do I copy a file together with its permissions?",
    "remove the common indentation from a block of text",
    "middle value of a list of numbers",
    "turn a dictionary into a URL query string",
    "delete a directory and everything inside it",
]

# %% [markdown]
# ## The model
#
# `Embedder.from_pretrained` reads a hub id, a sentence-transformers folder or a training run.
# In tiny mode a random tiny model is saved as a sentence-transformers folder first, so the
# load below is the same call either way.

# %%
if TINY:
    from embeddinggemma_jax.model import ModelConfig, init_params
    from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS
    from embeddinggemma_jax.text.tokenizer import Tokenizer

    lines = [*docs, *titles, *queries, *DEFAULT_PROMPTS.values()]
    tokenizer = Tokenizer(notebook.tiny_tokenizer(lines, OUT, 400))
    tiny = ModelConfig.tiny(vocab_size=tokenizer.vocab_size)
    params = init_params(tiny, jax.random.key(0))
    MODEL = str(Embedder(tiny, params, tokenizer, max_length=64).save_pretrained(OUT / "tiny"))

model = Embedder.from_pretrained(MODEL)
full = model.config.output_dim
print(f"{MODEL}: {full}-dimensional embeddings")

# %% [markdown]
# ## Prompts
#
# EmbeddingGemma was trained with a task prefix on every input. `encode_query` prepends the
# `query` prompt, `encode_document` the `title: ... | text: ` one; `encode(prompt_name=...)`
# takes any name of the table, `encode(prompt=...)` a literal prefix.

# %%
for name in ("query", "document", "STS", "Clustering", "InstructionRetrieval"):
    print(f"{name:22s} {model.prompts[name]!r}")

q = model.encode_query(queries)
d = model.encode_document(docs, titles=titles)
print(q.shape, d.shape, "norms", np.linalg.norm(q, axis=1).round(4))
same = model.encode(queries, prompt=model.prompts["query"])
print("encode_query == encode(prompt=...):", np.allclose(q, same, atol=1e-6))
sts = model.encode(queries, prompt_name="STS")
print("cosine of each query under the 'query' and the 'STS' prompt:", (q * sts).sum(1).round(3))

# %% [markdown]
# ## Search

# %%
scores = q @ d.T  # unit vectors: dot product = cosine
top = np.argsort(-scores, axis=1)[:, :3]
for i, query in enumerate(queries):
    print(query)
    for j in top[i]:
        print(f"   {scores[i, j]:.3f}  {titles[j]}: {docs[j][:70]}")

# %% [markdown]
# ## Matryoshka widths
#
# `dim=` keeps the first `dim` coordinates and re-normalises: smaller indexes, faster search.
# How much of the full-width ranking survives?

# %%
dims = [768, 512, 256, 128] if full == 768 else [full, full // 2, full // 4]  # tiny: 40, 20, 10
top1 = {}
for dim in dims:
    qd, dd = model.encode_query(queries, dim=dim), model.encode_document(docs, titles, dim=dim)
    assert qd.shape == (len(queries), dim)
    np.testing.assert_allclose(
        qd, q[:, :dim] / np.linalg.norm(q[:, :dim], axis=1, keepdims=True), atol=1e-5
    )
    top1[dim] = [titles[j] for j in np.argmax(qd @ dd.T, axis=1)]
for dim in dims:
    agree = np.mean([a == b for a, b in zip(top1[dim], top1[full])])
    print(f"dim {dim:4d}: top-1 agrees with dim {full} for {agree:.0%} of queries: {top1[dim]}")

# %%
results = {
    "tiny": TINY,
    "model": MODEL,
    "num_docs": len(docs),
    "dims": dims,
    "query_norms": np.linalg.norm(q, axis=1).tolist(),
    "top1": {str(k): v for k, v in top1.items()},
    "top_scores": scores.max(1).tolist(),
}
(OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
