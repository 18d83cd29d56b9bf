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
import importlib
import inspect
import json
import os
import random
import shutil
from pathlib import Path

import jax

import embeddinggemma_jax
from embeddinggemma_jax import Embedder, cli, parallel
from embeddinggemma_jax.eval.runner import evaluate_embedder, format_table
from embeddinggemma_jax.train.trainer import Trainer

# Tiny mode: forced by EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1 (=0 forces the real model); by
# default on when there is no accelerator and no local checkpoint (EMBEDDINGGEMMA_300M).
_flag = os.environ.get("EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY")
TINY = (
    _flag == "1"
    if _flag in ("0", "1")
    else jax.default_backend() == "cpu" and not os.environ.get("EMBEDDINGGEMMA_300M")
)
MODEL = os.environ.get("EMBEDDINGGEMMA_300M") or "google/embeddinggemma-300m"
OUT = Path(os.environ.get("EMBEDDINGGEMMA_JAX_NOTEBOOK_OUT", "notebook_runs")) / "02"
CONFIGS = Path(embeddinggemma_jax.__file__).resolve().parents[1] / "configs"
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run each time (a workdir would resume)
OUT.mkdir(parents=True)
print(f"tiny mode: {TINY}; devices: {jax.devices()}")

# %% [markdown]
# ## Your data as JSONL
#
# Replace this cell with your own file: any JSONL with `query` and `positive` fields works.

# %%
MODULES = (
    "textwrap shutil json csv statistics posixpath calendar difflib fnmatch glob tempfile "
    "urllib.parse email.utils html base64 gzip ipaddress uuid mimetypes functools heapq "
    "inspect tokenize ast locale logging subprocess os pprint copy"
).split()


def stdlib_pairs(modules):
    """(module, query: docstring summary, positive: qualified name and signature) per function."""
    for name in modules:
        module = importlib.import_module(name)
        for fname, f in inspect.getmembers(module, inspect.isfunction):
            if fname.startswith("_") or f.__module__ != module.__name__ or not f.__doc__:
                continue
            summary = " ".join(inspect.cleandoc(f.__doc__).split("\n\n")[0].split())
            if len(summary.split()) >= 4:
                yield name, summary, f"{name}.{fname}{inspect.signature(f)}"


pairs = list(stdlib_pairs(MODULES))
random.Random(1).shuffle(pairs)
held_out = pairs[::5]  # one function in five is never trained on
train = [{"query": q, "positive": p, "title": m} for i, (m, q, p) in enumerate(pairs) if i % 5]
train_file = OUT / "train.jsonl"
train_file.write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
print(f"{len(train)} training pairs in {train_file}, {len(held_out)} held out; e.g.")
print(json.dumps(train[0], indent=1))

# %% [markdown]
# The held-out functions as a retrieval task in the BEIR layout (`corpus.jsonl`,
# `queries.jsonl`, `qrels.tsv`): the evaluation reads such folders directly.


# %%
def write_beir(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, (m, _, p) in enumerate(rows):
            f.write(json.dumps({"_id": f"d{i}", "title": m, "text": p}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, (_, q, _) in enumerate(rows):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(rows)))
    )
    return folder


eval_task = write_beir(OUT / "held_out", held_out)

# %% [markdown]
# ## The training config
#
# Full mode: the finetune recipe of `configs/embeddinggemma_300m.py` (bfloat16 compute, float32
# parameters sharded over the devices), pointed at the JSONL, for a short run. Tiny mode:
# `configs/tiny.py` with a SentencePiece tokenizer trained on the same text.

# %%
if TINY:
    from embeddinggemma_jax.text.tokenizer import train_bpe

    corpus = OUT / "tokenizer_corpus.txt"
    lines = [t for _, q, p in pairs for t in (q, p)]
    lines += ["task: search result | query: ", "title: none | text: "]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = train_bpe(corpus, OUT / "tokenizer", 600, hard_vocab_limit=False, num_threads=1)
    config = cli.load_config(str(CONFIGS / "tiny.py"))
    config.unlock()
    config.tokenizer = str(tokenizer)
    config.num_steps = 60
    config.data.global_batch_size = 16
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 4
    config.checkpoint.every = 0
    config.log.every = 10
    config.loss.temperature = 0.1
    config.random_init.residual_scale = 0.0  # from scratch: start each layer as its skip path
else:
    config = cli.load_config(str(CONFIGS / "embeddinggemma_300m.py") + ":finetune")
    config.unlock()
    config.init_from = MODEL
    config.num_steps = 100
    config.data.global_batch_size = 64
    config.grad_cache.chunk = None  # 64 rows fit in memory
    config.data.query_max_length = 64
    config.data.doc_max_length = 64
    config.optimizer.warmup_steps = 10
    config.checkpoint.every = 0
    config.log.every = 10
config.data.datasets = [dict(path=str(train_file), weight=1.0, task="query", num_negatives=0)]
config.lock()

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
    "train_pairs": len(train),
    "held_out_pairs": len(held_out),
    "steps": summary["step"],
    "train_loss": [h["loss"] for h in summary["history"]["train"]],
    "ndcg_at_10": {name: main_scores(r) for name, r in reports.items()},
}
(OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print(json.dumps(results["ndcg_at_10"], indent=1))
