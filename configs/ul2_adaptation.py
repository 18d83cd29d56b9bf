"""UL2 adaptation: decoder-only Gemma 3 -> T5Gemma encoder-decoder, the embedder's initialisation.

    python -m embeddinggemma_jax.main --config=configs/ul2_adaptation.py:balanced \
        --workdir=runs/ul2 --config.init_from=PATH/gemma-3-270m(.gguf) \
        --config.tokenizer=PATH/tokenizer.model --config.train_data='data/text/*.jsonl'

then hand the adapted encoder to pre-finetuning (a sentence-transformers folder with a fresh head):

    from embeddinggemma_jax.train.ul2 import export_embedder_init
    export_embedder_init("runs/ul2", embedder_config, "runs/ul2_embedder", tokenizer=...)
    ... configs/embeddinggemma_300m.py:prefinetune --config.init_from=runs/ul2_embedder

Variants:
  balanced    encoder and decoder both from init_from (T5Gemma), cross-attention from
              self-attention; packed 512/512-token UL2 batches, bfloat16 compute, fsdp
  unbalanced  as balanced, decoder from the smaller --config.ul2.decoder_from, cross-attention
              from scratch and trained alone for ul2.cross_attention_warmup_steps steps
  tiny        CPU smoke run: random tiny model (or --config.init_from), short sequences
"""

import sys
from pathlib import Path

import ml_collections
from ml_collections import config_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.train.config import base_config  # noqa: E402

VARIANTS = ("balanced", "unbalanced", "tiny")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS, __file__)
    c = base_config()
    c.task = "ul2"
    c.init_from = ""  # decoder-only Gemma 3: Hugging Face folder or .gguf; "" = random init
    c.ul2 = ml_collections.ConfigDict()
    c.ul2.decoder_from = ""  # unbalanced: the decoder's (smaller) decoder-only model
    c.ul2.cross_attention_init = config_dict.placeholder(str)  # self_attention | scratch
    c.ul2.cross_attention_warmup_steps = 0
    c.ul2.encoder_max_length = 512
    c.ul2.decoder_max_length = 512
    c.ul2.s_fraction = 0.2  # share of S (prefix LM); the six R/X denoisers split the rest
    c.ul2.z_loss = 1e-4
    c.ul2.pack = True
    c.ul2.text_fields = ("text",)
    c.ul2.seed = 0
    c.data.global_batch_size = 256
    common.cosine_decay(c, 1e-4, warmup_steps=1000)
    c.checkpoint.best_metric = ""
    c.num_steps = 100_000
    if variant in ("balanced", "unbalanced"):
        common.accelerator(c)
    if variant == "unbalanced":
        c.ul2.cross_attention_init = "scratch"
        c.ul2.cross_attention_warmup_steps = 1000
    if variant == "tiny":
        common.smoke_run(c)
        c.model.preset = "tiny"
        c.data.global_batch_size = 8
        c.ul2.encoder_max_length = 48
        c.ul2.decoder_max_length = 32
        c.ul2.pack = False
        c.ul2.z_loss = 0.0
    c.lock()
    return c
