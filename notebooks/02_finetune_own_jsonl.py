# ---
# jupyter:
#   accelerator: TPU
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-ORG/embeddinggemma-jax/blob/main/notebooks/02_finetune_own_jsonl.ipynb)
#
# # Finetune EmbeddingGemma on your own JSONL
#
# Training data is one JSON object per line: `{"query": ..., "positive": ...}` (optionally
# `"negatives": [...]`, `"title"`; the full schema is in the README). Here the file is written
# from Python's own standard library: each function's docstring summary is a query, its
# qualified name and signature the positive. One function in five is held out for evaluation.
#
# On a Colab TPU runtime (Runtime → Change runtime type → TPU) the Trainer shards the batch
# over every TPU core and finetunes `google/embeddinggemma-300m` (accept its licence on the
# Hugging Face hub and log in below). Without an accelerator, or with
# `EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1`, it trains a tiny random model with a tokenizer
# trained on the same text, in seconds: the same code path, meaningless scale.

# %% tags=["colab"]
# Colab only: get the code and its dependencies (TPU wheels of JAX), then log in to the hub.
# If pip upgraded JAX, restart the session (Runtime → Restart session) and run from the next cell.
# !git clone --depth 1 https://github.com/YOUR-ORG/embeddinggemma-jax
# %cd embeddinggemma-jax
# !pip install -q -e ".[tpu]"
from huggingface_hub import notebook_login

notebook_login()

# %%
import json

import jax

from embeddinggemma_jax import Embedder, notebook, parallel
from embeddinggemma_jax.eval.runner import evaluate_embedder, format_table
from embeddinggemma_jax.train.trainer import Trainer

# Tiny mode: forced by EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1 (=0 forces the real model); by
# default on when there is no accelerator and no local checkpoint (EMBEDDINGGEMMA_300M).
TINY, MODEL, OUT = notebook.setup("02")  # OUT: a fresh folder for this run's files

# %% [markdown]
# ## Your data as JSONL
#
# Replace this cell with your own file: any JSONL with `query` and `positive` fields works.
# Here `notebook.stdlib_finetune_data` writes one from the standard library, and the held-out
# functions as a retrieval task in the BEIR layout (`corpus.jsonl`, `queries.jsonl`,
# `qrels.tsv`): the evaluation reads such folders directly.

# %%
data = notebook.stdlib_finetune_data(OUT)
train_file, eval_task = data.train_file, data.eval_task
print(f"{len(data.train)} training pairs in {train_file}, {len(data.held_out)} held out; e.g.")
print(json.dumps(data.train[0], indent=1))
print(f"held-out task {eval_task}: {sorted(p.name for p in eval_task.iterdir())}")

# %% [markdown]
# ## The training config
#
# Full mode: the finetune recipe of `configs/embeddinggemma_300m.py` (bfloat16 compute, float32
# parameters sharded over the devices), pointed at the JSONL, for a short run. Tiny mode:
# `configs/tiny.py` with a SentencePiece tokenizer trained on the same text. Both are
# `notebook.finetune_config`; print `config` for every key.

# %%
TOKENIZER = notebook.tiny_tokenizer(data.texts(), OUT, 600, num_threads=1) if TINY else None
config = notebook.finetune_config(TINY, MODEL, train_file, TOKENIZER)
config.log.every = 10
config.lock()
start_from = config.init_from or "random weights"
print(f"{config.num_steps} steps of {config.data.global_batch_size} pairs from {start_from}")

# %% [markdown]
# ## The mesh over every device
#
# `jax.devices()` is the 8 cores of a Colab TPU (one CPU device in tiny mode). The global
# batch is split over the mesh's data axes, so it must be a multiple of the device count.

# %%
mesh = parallel.make_mesh(dict(config.mesh), jax.devices())
print(parallel.describe(mesh))

# %%
workdir = OUT / "run"
trainer = Trainer(config, workdir, mesh=mesh)
start = trainer.restore_or_init()  # the starting point, saved so it can be evaluated
trainer.save(start)
trainer.checkpointer.wait()
summary = trainer.fit()
trainer.close()
print(f"trained to step {summary['step']}")

# %% [markdown]
# ## Before and after, on the held-out functions
#
# `Embedder.from_pretrained` reads any step of the run directory; every Matryoshka width is
# scored from one encoding.

# %%
before = Embedder.from_pretrained(workdir / "checkpoints" / str(start))
after = Embedder.from_pretrained(workdir)
reports = {
    name: evaluate_embedder(model, [str(eval_task)], batch_size=64, log=None)
    for name, model in (("before", before), ("after", after))
}
for name, report in reports.items():
    print(name)
    print(format_table(report))


# %%
def main_scores(report):
    (entry,) = report["tasks"].values()
    return {d: r["main_score"] for d, r in entry["results"].items()}


results = {
    "tiny": TINY,
    "devices": len(jax.devices()),
    "train_pairs": len(data.train),
    "held_out_pairs": len(data.held_out),
    "steps": summary["step"],
    "train_loss": [h["loss"] for h in summary["history"]["train"]],
    "ndcg_at_10": {name: main_scores(r) for name, r in reports.items()},
}
(OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print(json.dumps(results["ndcg_at_10"], indent=1))
