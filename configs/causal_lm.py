"""Causal-LM stage: a decoder-only Gemma 3 trained from random weights on text, the UL2 stage's start.

    python -m embeddinggemma_jax.main --config=configs/causal_lm.py --workdir=runs/causal_lm \
        --config.tokenizer=PATH/tokenizer.model --config.train_data='data/text/*.jsonl'

then adapt it to an encoder-decoder (its tokenizer is the UL2 run's default):

    ... configs/ul2_adaptation.py:balanced --workdir=runs/ul2 --config.init_from=runs/causal_lm
    ... configs/embeddinggemma_300m.py:prefinetune --config.init_from=runs/ul2

(the contrastive stage takes the UL2 run's adapted encoder and a fresh head). In Python, as a
recipe does: ``c = get_config("tiny")``, set ``c.tokenizer``, ``c.train_data``, ``c.num_steps``
and the ``c.model`` shape fields, then ``Trainer(c, workdir).fit()``.

Keys (``config.causal_lm``): max_length (tokens per text: BOS + text + EOS, cut), text_fields
(JSONL fields holding text), pack (several texts per row), add_eos, z_loss, extra_rows (embedding
rows past the tokenizer's pieces for the UL2 stage's sentinel and mode ids; None: as many as UL2
needs at 512 / 512 tokens: 131 with a tokenizer that has no ``<unusedN>`` pieces, 0 with Gemma's;
set it higher for longer UL2 lengths, `train.ul2.ul2_extra_rows` says how many).

Variants:
  300m  (default) the EmbeddingGemma-300m shape (24 layers, D 768, 5 local : 1 global) as a
        causal LM: packed 512-token rows, 128 per batch, bfloat16 compute, fsdp, 100k steps
  tiny  CPU smoke run: the tiny shape, 8 padded 32-token rows, 3 steps
"""

import sys
from pathlib import Path

import ml_collections
from ml_collections import config_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.train.config import base_config  # noqa: E402

VARIANTS = ("300m", "tiny")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS, __file__)
    c = base_config()
    c.task = "causal_lm"
    c.causal_lm = ml_collections.ConfigDict()
    c.causal_lm.max_length = 512
    c.causal_lm.text_fields = ("text",)
    c.causal_lm.pack = True
    c.causal_lm.add_eos = True
    c.causal_lm.z_loss = 1e-4
    c.causal_lm.extra_rows = config_dict.placeholder(int)  # None: what UL2 at 512 / 512 needs
    c.model.preset = "embeddinggemma_300m"
    c.data.global_batch_size = 128
    common.cosine_decay(c, 3e-4, warmup_steps=2000)
    c.checkpoint.best_metric = ""  # no evaluation: keep the latest checkpoints
    c.num_steps = 100_000
    if variant == "300m":
        common.accelerator(c)
    if variant == "tiny":
        common.smoke_run(c)
        c.model.preset = "tiny"
        c.data.global_batch_size = 8
        c.causal_lm.max_length = 32
        c.causal_lm.pack = False
        c.causal_lm.z_loss = 0.0
    c.lock()
    return c
