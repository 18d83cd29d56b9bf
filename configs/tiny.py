"""Tiny config for tests and smoke runs: the odd-sized tiny model, a few steps, CPU-friendly.

    python -m embeddinggemma_jax.main --config=configs/tiny.py --workdir=/tmp/tiny \
        --config.train_data=data/stdlib/train.jsonl --config.tokenizer=PATH/tokenizer.model
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.train.config import base_config  # noqa: E402


def get_config(arg=None):
    del arg
    c = base_config()
    common.smoke_run(c)
    c.model.preset = "tiny"
    c.data.datasets = [dict(path="", weight=1.0, task="query", num_negatives=1)]
    c.data.global_batch_size = 8
    c.data.query_max_length = 24
    c.data.doc_max_length = 32
    c.data.min_bucket = 8
    c.data.num_threads = 1
    c.data.prefetch_buffer_size = 1
    c.eval.batch_size = 16
    c.lock()
    return c
