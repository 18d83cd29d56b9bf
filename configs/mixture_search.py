"""The mixture search (`embeddinggemma_jax.tune`): Bayesian optimisation of the finetuning
mixture's weights over the task groups, each trial a short finetune scored on held-out dev splits.

    # the 300m model on an accelerator (TPU slice / GPU), from the released checkpoint:
    python -m embeddinggemma_jax.tune --config=configs/mixture_search.py --workdir=runs/search \
        [--config.train.init_from=PATH] [--worker=i --num_workers=n]

    # quickstart scale, a few minutes on a laptop CPU:
    python -m embeddinggemma_jax.tune --config=configs/mixture_search.py:tiny --workdir=runs/search-tiny

then ``python -m embeddinggemma_jax.soup runs/search/top/* --output runs/soup``.

Variants:
  (default)  300m finetune (configs/embeddinggemma_300m.py:finetune, 1,000 steps per trial) on the
             data builders' datasets, one per task group and a second code one; seed mixture +
             10 Dirichlet samples + 20 GP-BO trials (the paper: grid-searched seed + 10 Dirichlet).
  tiny       the quickstart model (D=96, 2 layers, 4k SentencePiece trained on the mixture's
             training splits) trained from scratch once as a shared base (120 steps), then trials
             of 40 steps: seed + 4 Dirichlet + 3 BO.

Datasets come from `data.build` (``search.build``: stdlib, sympy, catalogs, definitions); each
one's dev split is a dev task of its task group unless ``search.dev_tasks`` is set
(``group=task,...``, task folders or built-in names). stdlib has no dev split: the code group is
scored on sympy's.
"""

import sys
from pathlib import Path

import ml_collections
from ml_collections import config_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402

VARIANTS = ("full", "tiny")

# The mixture (data.build's datasets) -> (query prompt, seed weight): the three task groups
# weighted equally, as in configs/embeddinggemma_300m.py:finetune.
DATASETS = {
    "stdlib": ("InstructionRetrieval", 1 / 6),  # code
    "sympy": ("InstructionRetrieval", 1 / 6),  # code
    "catalogs": ("BitextMining", 1 / 3),  # language
    "definitions": ("Retrieval", 1 / 3),  # task
}


def _search(**changes) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.num_dirichlet = 10
    s.alpha = 1.0
    s.num_bo = 20
    s.seed = 0
    s.sampler = "gp"  # gp (Optuna GPSampler; needs torch: the `tune` extra) | tpe
    s.top_k = 3  # trials linked under <workdir>/top for the soup
    s.base_steps = 0  # > 0 and no train.init_from: train a shared base run first
    s.tokenizer_vocab = 0  # > 0 and no tokenizer: train one on the training splits
    s.eval_batch_size = 64
    s.build = tuple(DATASETS)  # data.build datasets; their train splits replace the paths
    s.build_output = "data"  # "" = the package cache
    s.build_max_records = config_dict.placeholder(int)  # per split; None = all
    s.build_max_eval_records = config_dict.placeholder(int)
    s.build_seed = 0
    s.dev_tasks = ""  # GROUP=TASK,...; "" = the built datasets' dev splits by task group
    s.test_tasks = ""  # reported with the soup only, never searched on; "" = the test splits
    s.update(changes)
    return s


def _datasets(num_negatives: int):
    return [
        dict(name=n, path="", weight=weight, task=task, num_negatives=num_negatives)
        for n, (task, weight) in DATASETS.items()
    ]


def get_config(arg=None):
    variant = arg or "full"
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/mixture_search.py: variant must be one of {VARIANTS}, got {arg!r}"
        )
    c = ml_collections.ConfigDict()
    if variant == "full":
        from embeddinggemma_jax.cli import load_config

        # Its data.datasets is the mixture (data/<name>/train.jsonl) and its weights the seed.
        train = load_config(str(Path(__file__).with_name("embeddinggemma_300m.py")) + ":finetune")
        train.unlock()
        train.num_steps = 1000
        train.optimizer.warmup_steps = 100
        train.checkpoint.every = 250
        train.checkpoint.keep = 1
        c.train = train
        c.search = _search()
    else:
        from embeddinggemma_jax.quickstart import quickstart_config

        train = quickstart_config()
        del train["stdlib"]  # the datasets come from search.build, not the quickstart's prepare
        train.prepare = ""
        train.num_steps = 40
        train.data.global_batch_size = 64
        train.data.datasets = _datasets(num_negatives=1)
        train.optimizer.learning_rate = 2e-3
        train.optimizer.warmup_steps = 5
        train.checkpoint.every = 20
        train.checkpoint.keep = 1
        common.quiet(train, log_every=10)
        train.eval.at_start = False
        c.train = train
        c.search = _search(
            num_dirichlet=4,
            num_bo=3,
            base_steps=120,
            tokenizer_vocab=4000,
            build_output="",
            build_max_records=6000,
            build_max_eval_records=300,
        )
    c.lock()
    return c
