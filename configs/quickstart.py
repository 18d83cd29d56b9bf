"""A tiny Gemma 3 encoder trained from scratch on the standard-library code-search dataset, with
the full objective: one contrastive stage (`make quickstart` runs the whole recipe instead:
configs/recipe.py:quickstart, whose stages start from this config's shape and settings).

    python -m embeddinggemma_jax.main --config=configs/quickstart.py --workdir=runs/stdlib

builds the dataset and tokenizer first (cached; the config's ``prepare`` step,
`embeddinggemma_jax.quickstart.prepare`) and evaluates the held-out split before and after.
"""

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.train.config import base_config  # noqa: E402


def get_config(arg=None):
    del arg
    c = base_config()
    # Tuned on this 2-core machine (see the README table): ~5 min of training and evaluation.
    c.num_steps = 160
    c.seed = 0
    c.mesh.data = -1
    c.model.preset = "tiny"
    c.model.embed_dim = 96
    c.model.num_layers = 2
    c.model.layer_types = ("local", "global")
    c.model.num_heads = 3
    c.model.num_kv_heads = 1
    c.model.head_dim = 32
    c.model.mlp_dim = 192
    c.model.sliding_window = 64
    c.model.query_pre_attn_scalar = 32.0
    c.model.max_length = 256
    c.model.head_dims = (192, 96)
    c.model.matryoshka_dims = (96, 48, 24)
    # From scratch, start each layer as its skip path (pooled token embeddings): learning is
    # several times faster than with unit-size residual branches.
    c.random_init.residual_scale = 0.0
    c.data.datasets = [dict(path="", weight=1.0, task="InstructionRetrieval", num_negatives=1)]
    c.data.global_batch_size = 128
    c.data.query_max_length = 48  # the prompt takes ~15 tokens; 32 truncated most queries
    c.data.doc_max_length = 64
    c.data.min_bucket = 64  # one padded shape per role: one compilation of the step
    c.data.num_threads = 1
    c.data.prefetch_buffer_size = 2
    common.cosine_decay(c, 5e-3, warmup_steps=20, end_fraction=0.05, weight_decay=0.1)
    # The full objective: contrastive with a BM25 hard negative per query, spread-out,
    # Matryoshka. A random encoder cannot yet tell near-duplicates apart, so the hard negative
    # is not up-weighted (alpha 0) and the temperature is softer than for finetuning.
    c.loss.temperature = 0.1
    c.loss.hard_negative_alpha = 0.0
    c.loss.spread_out_weight = 1.0
    c.checkpoint.every = 80
    c.checkpoint.keep = 2
    c.log.every = 20
    c.log.tensorboard = True
    c.eval.query_prompt = "InstructionRetrieval"
    c.eval.at_start = True
    c.eval.at_end = True
    c.eval.every = 0
    c.eval.batch_size = 64
    c.stdlib = ml_collections.ConfigDict()
    c.stdlib.dir = ""  # "" = <cache>/stdlib (shared with eval's stdlib-code-search task)
    c.stdlib.eval_fraction = 0.1
    c.stdlib.num_negatives = 3  # mined per record
    c.stdlib.train_negatives = 1  # used per query in training (<= num_negatives)
    c.stdlib.seed = 0
    c.stdlib.vocab_size = 4000
    # Before the data is opened, the Trainer runs this: builds the stdlib dataset and the
    # tokenizer (cached) and points train_data, tokenizer and eval.task at them.
    c.prepare = "embeddinggemma_jax.quickstart:prepare"
    c.lock()
    return c
