"""EmbeddingGemma-300m contrastive stages.

    # finetune the released model (or any sentence-transformers folder / earlier-stage workdir)
    # on the task mixture (data.datasets), built first into data/:
    python -m embeddinggemma_jax.data.build --dataset stdlib,sympy,catalogs,definitions --output data
    python -m embeddinggemma_jax.main --config=configs/embeddinggemma_300m.py:finetune \
        --workdir=runs/finetune --config.init_from=google/embeddinggemma-300m \
        [--config.teacher.path=PATH]

    # pre-finetune (pairs, large batch, no hard negatives) from an earlier stage's workdir:
    python -m embeddinggemma_jax.main --config=configs/embeddinggemma_300m.py:prefinetune \
        --workdir=runs/prefinetune --config.init_from=runs/ul2 --config.train_data='data/pairs/*.jsonl'

Variants:
  prefinetune  query/positive pairs (num_negatives 0), global batch 4096 through GradCache, lr 1e-4
  finetune     3 hard negatives per query, global batch 256 through GradCache, lr 2e-5;
               distillation on when config.teacher.path is set (or the data carries teacher
               embeddings, dataset option teacher=True)

Both compute in bfloat16 (float32 params) with rematerialisation and shard parameters and
optimizer state over all devices (fsdp); set --config.mesh.data / fsdp / tensor to change that.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.train.config import base_config  # noqa: E402

VARIANTS = ("prefinetune", "finetune")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS, __file__, default="finetune")
    c = base_config()
    c.init_from = "google/embeddinggemma-300m"
    c.model.preset = "embeddinggemma_300m"
    common.accelerator(c)
    common.cosine_decay(c)  # each variant sets its learning rate and warm-up
    c.optimizer.clip_norm = 1.0
    c.checkpoint.every = 1000
    c.checkpoint.keep = 3
    c.log.every = 20
    c.loss.temperature = 0.05
    c.loss.spread_out_weight = 1.0
    c.data.query_max_length = 256
    c.data.doc_max_length = 512
    if variant == "prefinetune":
        c.num_steps = 20_000
        c.data.datasets = [dict(path="", weight=1.0, task="query", num_negatives=0)]
        c.data.global_batch_size = 4096
        c.grad_cache.chunk = 256
        c.optimizer.learning_rate = 1e-4
        c.optimizer.warmup_steps = 1000
        c.loss.hard_negative_alpha = 0.0
    else:
        c.num_steps = 5_000
        # The task mixture: one dataset per global batch, the paper's three task groups weighted
        # equally (data.mixtures.TASK_GROUPS; this is the mixture search's seed trial).
        c.data.datasets = [
            dict(name=name, path=f"data/{name}/train.jsonl", weight=weight, num_negatives=3)
            for name, weight in (
                ("stdlib", 1 / 6),  # code
                ("sympy", 1 / 6),  # code
                ("catalogs", 1 / 3),  # language
                ("definitions", 1 / 3),  # task
            )
        ]
        c.data.global_batch_size = 256
        c.grad_cache.chunk = 64
        c.optimizer.learning_rate = 2e-5
        c.optimizer.warmup_steps = 300
        c.loss.hard_negative_alpha = 5.0
        c.loss.distill_weight = 1.0
        c.teacher.dtype = "bfloat16"
    c.lock()
    return c
