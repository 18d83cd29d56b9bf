"""The quickstart run (what `make quickstart` trains): a tiny Gemma 3 encoder from scratch on the
standard-library code-search dataset, with the full objective.

    python -m embeddinggemma_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

builds the dataset and tokenizer first (cached) like `python -m embeddinggemma_jax.quickstart`,
which also prints the before/after table and writes report.json.
"""

from embeddinggemma_jax.quickstart import quickstart_config


def get_config(arg=None):
    del arg
    c = quickstart_config()
    c.lock()
    return c
