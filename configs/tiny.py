"""Tiny config for tests and smoke runs: the odd-sized tiny model, a few steps, CPU-friendly.

    python -m embeddinggemma_jax.main --config=configs/tiny.py --workdir=/tmp/tiny \
        --config.train_data=data/stdlib/train.jsonl --config.tokenizer=PATH/tokenizer.model
"""

from embeddinggemma_jax.train.config import base_config


def get_config(arg=None):
    del arg
    c = base_config()
    c.num_steps = 3
    c.model.preset = "tiny"
    c.data.datasets = [dict(path="", weight=1.0, task="query", num_negatives=1)]
    c.data.global_batch_size = 8
    c.data.query_max_length = 24
    c.data.doc_max_length = 32
    c.data.min_bucket = 8
    c.data.num_threads = 1
    c.data.prefetch_buffer_size = 1
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1
    c.checkpoint.every = 2
    c.checkpoint.async_save = False
    c.log.every = 1
    c.log.tensorboard = False
    c.log.progress = False
    c.eval.batch_size = 16
    c.lock()
    return c
