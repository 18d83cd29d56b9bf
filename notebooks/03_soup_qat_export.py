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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-ORG/embeddinggemma-jax/blob/main/notebooks/03_soup_qat_export.ipynb)
#
# # Soup, quantization-aware training and GGUF export
#
# The last steps of the EmbeddingGemma recipe on a small scale:
#
# 1. finetune two *ingredients* from the same starting point (here: two data orders);
# 2. average their parameters into a model soup (`make_soup`);
# 3. quantization-aware training (QAT): a short finetune of the soup with the `q8_0`
#    fake-quantized forward pass, distilled from the float soup (as `configs/qat.py`);
# 4. compare the float soup, post-training quantization (PTQ) and QAT: cosine to the float
#    embeddings and held-out retrieval scores;
# 5. export the QAT model as a GGUF `Q8_0` file for llama.cpp.
#
# The data is the one of notebook 2: Python standard-library docstring summaries (queries) and
# the functions' names and signatures (positives), one function in five held out. Full mode
# (a Colab TPU, or `EMBEDDINGGEMMA_300M` set) finetunes `google/embeddinggemma-300m`; tiny
# mode (no accelerator, or `EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1`) a tiny random model whose
# widths are multiples of GGUF's 32-value quantization blocks, in the 300m's layer pattern.

# %% tags=["colab"]
# Colab only: get the code and its dependencies (TPU wheels of JAX, gguf), then log in to the
# hub. If pip upgraded JAX, restart the session and run from the next cell.
# !git clone --depth 1 https://github.com/YOUR-ORG/embeddinggemma-jax
# %cd embeddinggemma-jax
# !pip install -q -e ".[tpu,gguf]"
from huggingface_hub import notebook_login

notebook_login()

# %%
import json

import gguf
import numpy as np

from embeddinggemma_jax import Embedder, notebook
from embeddinggemma_jax.cache import enable_compilation_cache
from embeddinggemma_jax.eval.runner import evaluate_embedder
from embeddinggemma_jax.export import export
from embeddinggemma_jax.soup import make_soup
from embeddinggemma_jax.train.trainer import Trainer

# Tiny mode: forced by EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1 (=0 forces the real model); by
# default on when there is no accelerator and no local checkpoint (EMBEDDINGGEMMA_300M).
TINY, MODEL, OUT = notebook.setup("03")  # OUT: a fresh folder for this run's files
enable_compilation_cache()  # the second ingredient reuses the first one's compiled step

# %% [markdown]
# ## Data: training JSONL and a held-out retrieval task
#
# Notebook 2's: `notebook.stdlib_finetune_data` (docstring summary -> function name and
# signature, one function in five held out).

# %%
data = notebook.stdlib_finetune_data(OUT)
held_out, eval_task = data.held_out, data.eval_task
print(f"{len(data.train)} training pairs, {len(held_out)} held out")

# %% [markdown]
# ## Configs
#
# `make_config(init_from, quant)` is one finetune run on the JSONL (`notebook.finetune_config`):
# the 300m finetune recipe in full mode, `configs/tiny.py` in tiny mode (from random weights
# when `init_from` is empty: then the tiny shape is set here; a run started from a checkpoint
# takes the checkpoint's shape).

# %%
TOKENIZER = notebook.tiny_tokenizer(data.texts(), OUT, 600) if TINY else None


def make_config(init_from="", quant=None, steps=None, data_seed=0):
    c = notebook.finetune_config(TINY, MODEL, data.train_file, TOKENIZER, init_from, steps)
    if TINY and not init_from:
        # Widths divisible by 32 (GGUF blocks), the 5 local + 1 global layer pattern
        # (llama.cpp's gemma-embedding); each layer starts as its skip path.
        c.model.update(embed_dim=64, head_dim=32, mlp_dim=96, query_pre_attn_scalar=32.0)
        c.model.update(num_layers=6, layer_types=("local",) * 5 + ("global",))
        c.model.update(head_dims=(128, 64), matryoshka_dims=(64, 32))
    c.data.seed = data_seed
    c.log.every = c.num_steps
    c.log.progress = False
    if quant:  # QAT as configs/qat.py: fake-quantized forward, distilled from the float start
        c.model.quant = quant
        c.teacher.path = init_from
        c.teacher.dtype = "float32"
        c.loss.distill_weight = 1.0
        c.optimizer.learning_rate /= 10
    c.lock()
    return c


def train(config, workdir):
    trainer = Trainer(config, workdir)
    summary = trainer.fit()
    trainer.close()
    return str(workdir), summary


# %% [markdown]
# ## Two ingredients and their soup
#
# Both start from the same weights (the released model; in tiny mode the same random
# initialisation, `config.seed`) and see the data in different orders.

# %%
ingredients = [train(make_config(data_seed=s), OUT / f"ingredient{s}")[0] for s in (0, 1)]
report = make_soup(ingredients, OUT / "soup", progress=False)
soup = report["output"]


def ndcg(model):
    (entry,) = evaluate_embedder(model, [str(eval_task)], batch_size=64, log=None)["tasks"].values()
    return {d: round(r["main_score"], 4) for d, r in entry["results"].items()}


scores = {name: ndcg(Embedder.from_pretrained(path)) for name, path in
          [("ingredient0", ingredients[0]), ("ingredient1", ingredients[1]), ("soup", soup)]}  # fmt: skip
for name, s in scores.items():
    print(f"{name:12s} held-out ndcg@10 by width: {s}")

# %% [markdown]
# ## PTQ and QAT
#
# PTQ: the soup's weights rounded to `q8_0` / `q4_0` blocks, no training
# (`Embedder.from_pretrained(..., quant=...)` computes what the export stores). QAT: a few
# steps of finetuning with the quantized forward pass (straight-through gradients, float
# parameters), distilled from the float soup.

# %%
qat_run, qat_summary = train(make_config(init_from=soup, quant="q8_0", steps=10), OUT / "qat")
models = {
    "float": Embedder.from_pretrained(soup),
    "ptq_q8_0": Embedder.from_pretrained(soup, quant="q8_0"),
    "ptq_q4_0": Embedder.from_pretrained(soup, quant="q4_0"),
    "qat_q8_0": Embedder.from_pretrained(qat_run, quant="q8_0"),
}
texts = [p for _, _, p in held_out]
embeddings = {name: m.encode_document(texts) for name, m in models.items()}
cosine = {name: float(np.mean((e * embeddings["float"]).sum(1))) for name, e in embeddings.items()}
for name, m in models.items():
    if name != "float":
        scores[name] = ndcg(m)
print(f"{'model':10s} {'cos to float':>12s}  held-out ndcg@10 by width")
for name in models:
    key = "soup" if name == "float" else name
    print(f"{name:10s} {cosine[name]:12.5f}  {scores[key]}")

# %% [markdown]
# ## GGUF export
#
# `export()` is the library side of `python -m embeddinggemma_jax.export`: GGUF for llama.cpp
# (architecture `gemma-embedding`, both Dense layers, the tokenizer). The `Q8_0` file stores the
# blocks the QAT model computes with.

# %%
sizes, types = {}, {}
for quant in ("f32", "q8_0"):
    path = export(qat_run, "gguf", quant, OUT / f"model-{quant}.gguf", progress=False)
    sizes[quant] = path.stat().st_size
    reader = gguf.GGUFReader(path)
    names = [t.tensor_type.name for t in reader.tensors]
    types[quant] = {n: names.count(n) for n in sorted(set(names))}
    print(f"{path.name}: {sizes[quant] / 2**20:.2f} MiB, tensor types {types[quant]}")

# %%
results = {
    "tiny": TINY,
    "ingredients": ingredients,
    "soup": soup,
    "soup_num_kept": report["num_kept"],
    "qat_steps": qat_summary["step"],
    "ndcg_at_10": scores,
    "cosine_to_float": cosine,
    "gguf_bytes": sizes,
    "gguf_tensor_types": types,
}
(OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
