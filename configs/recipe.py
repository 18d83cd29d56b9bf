"""The whole EmbeddingGemma recipe as one pipeline (`embeddinggemma_jax.recipe`).

    python -m embeddinggemma_jax.recipe --config=configs/recipe.py:quickstart --workdir=runs/quickstart
    python -m embeddinggemma_jax.recipe --config=configs/recipe.py:300m --workdir=gs://BUCKET/recipe \
        --config.init_from=PATH/gemma-3-270m [--stage=ul2]

Stages: data, causal_lm, ul2, prefinetune, prefinetune_random (ablation), search, finetune, soup,
qat, export, report (see the recipe module). Each stage's settings are a full training config
under its name (``--config.prefinetune.num_steps=...``), built from the stage's own config file.

Variants:
  quickstart  what `make quickstart` runs on a 2-core CPU: a D=96, 2-layer Gemma 3 trained as a
              causal LM on the mixture's text, UL2-adapted, pre-finetuned, 4-trial mixture
              search, 2 finetunes, souped, QAT q8_0 / q4_0 / mixed, exported, reported
  300m        the same pipeline for the real model on accelerators: starts at ul2 from a Gemma 3
              decoder-only checkpoint (``config.init_from``: Hugging Face folder or .gguf; its
              tokenizer: ``--config.data.tokenizer``), or with ``--config.start=prefinetune``
              from any embedding checkpoint; full-size datasets, the stage configs of
              configs/ul2_adaptation.py:balanced, embeddinggemma_300m.py:prefinetune,
              mixture_search.py, qat.py
  test        the smallest pipeline the tests run (a few steps per stage)
"""

import sys
from pathlib import Path

import ml_collections
from ml_collections import config_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common  # noqa: E402
from embeddinggemma_jax.cli import load_config  # noqa: E402

VARIANTS = ("quickstart", "300m", "test")
HERE = Path(__file__).resolve().parent

# The quickstart model: configs/quickstart.py's D=96 shape, with Gemma 3's own layer pattern
# (both layers local at 2 layers): llama.cpp's gemma-embedding fixes the pattern, so the GGUF
# export refuses any other. Its +-64-token window covers the 64-token documents whole.
TINY_SHAPE = dict(
    preset="tiny", embed_dim=96, num_layers=2, layer_types=None, num_heads=3,
    num_kv_heads=1, head_dim=32, mlp_dim=192, sliding_window=64, query_pre_attn_scalar=32.0,
    max_length=256, head_dims=(192, 96), matryoshka_dims=(96, 48, 24),
)  # fmt: skip


def _load(spec: str):
    c = load_config(str(HERE / spec))
    c.unlock()
    return c


def _language_model_run(c, num_steps: int, learning_rate: float) -> None:
    """The causal-LM and UL2 stages at CPU scale: 32 sequences a step, a short warm-up."""
    c.data.global_batch_size = 32
    c.num_steps = num_steps
    c.optimizer.learning_rate = learning_rate
    c.optimizer.warmup_steps = 5
    c.checkpoint.every = 30
    common.quiet(c, log_every=10)  # the recipe prints one line per stage


def _stages_quickstart(c, scale: float = 1.0) -> None:
    """Stage configs at CPU scale; `scale` multiplies the step counts (test: tiny)."""

    def steps(n: int) -> int:
        return max(2, int(round(n * scale)))

    lm = _load("causal_lm.py:tiny")
    lm.model.update(TINY_SHAPE)
    lm.random_init.residual_scale = 0.0  # from the skip path, as configs/quickstart.py
    lm.causal_lm.max_length = 96
    _language_model_run(lm, steps(60), learning_rate=3e-3)
    c.causal_lm = lm

    ul2 = _load("ul2_adaptation.py:tiny")
    ul2.ul2.encoder_max_length = 96
    ul2.ul2.decoder_max_length = 48
    _language_model_run(ul2, steps(60), learning_rate=2e-3)
    c.ul2 = ul2

    search = _load("mixture_search.py:tiny")
    # Pre-finetuning: pairs without hard negatives, a large batch through GradCache.
    pre = _load("quickstart.py")
    del pre["stdlib"]
    pre.prepare = ""
    # Code-heavy: the headline task (held-out stdlib code search) is the hardest group to learn.
    weights = {"stdlib": 0.5, "sympy": 0.2, "catalogs": 0.15, "definitions": 0.15}
    pre.data.datasets = [
        {**d, "num_negatives": 0, "weight": weights[d["name"]]} for d in search.train.data.datasets
    ]
    pre.data.global_batch_size = 256
    pre.grad_cache.chunk = 128
    # Held-out stdlib nDCG@10 after pre-finetuning from the UL2 encoder, by steps (2-core CPU,
    # 2026-12-02): 120: 0.172, 180: 0.198, 240: 0.219; the soups of 180 and 240 both reached
    # ~0.20, and 240 took the quickstart to 16 min.
    pre.num_steps = steps(180)
    # The UL2 encoder starts anisotropic (pooled states' mean cosine 0.72): a 10x spread-out
    # regulariser (the 300m's is 1) spreads the embeddings. Held-out stdlib after pre-finetuning,
    # by weight (2-core CPU, 2026-12-03): 1: 0.198, 3: 0.211, 5: 0.210, 10: 0.240, 15: 0.218,
    # 30: 0.207; the soup of weight 10 (finetunes too): 0.237 (seed 1: 0.225), weight 1: 0.205.
    pre.loss.spread_out_weight = 10.0
    pre.checkpoint.every = 60
    pre.eval.at_start = False
    common.quiet(pre, log_every=10)
    c.prefinetune = pre

    search.train.num_steps = steps(20)
    search.train.checkpoint.every = steps(20)
    search.train.optimizer.warmup_steps = 2
    search.train.loss.spread_out_weight = pre.loss.spread_out_weight  # the trials and finetunes
    common.quiet(search.train, log_every=10)
    search.search.num_dirichlet = 2
    search.search.num_bo = 1
    search.search.top_k = 2
    search.search.sampler = "tpe"  # no torch at runtime
    c.search = search

    c.finetune = ml_collections.ConfigDict()
    c.finetune.num_steps = steps(120)
    c.finetune.global_batch_size = 128
    c.finetune.learning_rate = 3e-3

    qat = _load("mixture_search.py:tiny").train
    qat.num_steps = steps(10)
    qat.optimizer.learning_rate = 5e-5  # 2e-4 moved the model off the soup in 10 steps
    qat.optimizer.warmup_steps = 2
    qat.loss.distill_weight = 1.0
    qat.checkpoint.every = steps(20)
    common.quiet(qat, log_every=10)
    c.qat.train = qat


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS, __file__)
    c = ml_collections.ConfigDict()
    c.start = "causal_lm"  # the first stage trained here: causal_lm | ul2 | prefinetune
    c.init_from = ""  # its starting checkpoint (ul2: a decoder-only Gemma 3; prefinetune: any)

    c.data = ml_collections.ConfigDict()
    c.data.build = ("stdlib", "sympy", "catalogs", "definitions")  # data.build datasets
    c.data.eval_only = ("gensim-eval",)  # data.build's evaluation-only task folders
    c.data.output = ""  # "" = the package cache
    c.data.max_records = config_dict.placeholder(int)  # per split; None = all
    c.data.max_eval_records = config_dict.placeholder(int)
    c.data.seed = 0
    c.data.tokenizer = ""  # "" = train a SentencePiece BPE on the training splits
    c.data.tokenizer_vocab = 4000
    c.data.text_records_per_dataset = 3000  # records whose texts the LM stages read
    c.data.progress = True

    c.ablation = ml_collections.ConfigDict()
    c.ablation.enabled = True  # prefinetune_random: the same pre-finetuning from random weights

    c.soup = ml_collections.ConfigDict()
    c.soup.method = "uniform"

    c.qat = ml_collections.ConfigDict()
    c.qat.schemes = ("q8_0", "q4_0", "mixed")

    c.export = ml_collections.ConfigDict()
    c.export.formats = ("gguf:f32", "gguf:q8_0", "gguf:q4_0", "sentence-transformers:mixed")

    c.report = ml_collections.ConfigDict()
    # Tasks of other types (STS, classification): built-in names or data.eval_only task names.
    c.report.extra_tasks = ("lee-sts", "pang-lee-polarity")
    c.report.headline_dataset = "stdlib"
    c.report.batch_size = 64
    # Tokens per text when scoring (longer ones cut); None = the model's max_length. The
    # quickstart scores at its training length, as the trainer's own evaluation does.
    c.report.max_length = config_dict.placeholder(int)

    # Seconds each stage took in the measured quickstart: the ETA of the progress lines.
    c.expected_s = ml_collections.ConfigDict(dict(
        data=30, causal_lm=25, ul2=25, prefinetune=170, prefinetune_random=170, search=70,
        finetune=190, soup=1, qat=55, export=2, report=45,
    ))  # fmt: skip

    if variant in ("quickstart", "test"):
        c.data.max_records = 6000
        c.data.max_eval_records = 300
        c.report.max_length = 64
        _stages_quickstart(c)
    if variant == "test":
        c.data.build = ("stdlib", "catalogs")
        c.data.max_records = 400
        c.data.max_eval_records = 40
        c.data.tokenizer_vocab = 800
        c.data.text_records_per_dataset = 200
        c.data.progress = False
        c.report.extra_tasks = ("lee-sts",)
        # Texts cut at 32 tokens, batches of 16: each scored model compiles 2 forward shapes (the
        # 16- and 32-token buckets), not 3 (the report is compile-bound at this size).
        c.report.max_length = 32
        c.report.batch_size = 16
        _stages_quickstart(c, scale=0.0)  # 2 steps per stage
        c.search.search.num_dirichlet = 1
        c.search.search.num_bo = 0
        for d in (c.prefinetune, c.search.train, c.qat.train):
            d.data.datasets = [x for x in d.data.datasets if x["name"] in c.data.build]
        c.prefinetune.data.global_batch_size = 32
        c.prefinetune.grad_cache.chunk = 16
        c.search.train.data.global_batch_size = 16
        c.finetune.global_batch_size = 16
        c.finetune.learning_rate = c.search.train.optimizer.learning_rate
        c.qat.train.data.global_batch_size = 16
        c.qat.schemes = ("q8_0",)  # each scheme is a model of its own to compile in the report
        c.export.formats = ("gguf:q8_0", "sentence-transformers:q8_0")
    if variant == "300m":
        c.start = "ul2"
        c.init_from = config_dict.placeholder(str)  # required: a Gemma 3 decoder-only model
        c.data.tokenizer = config_dict.placeholder(str)  # required: its tokenizer.model
        c.causal_lm = _load("causal_lm.py:300m")
        c.ul2 = _load("ul2_adaptation.py:balanced")
        c.prefinetune = _load("embeddinggemma_300m.py:prefinetune")
        c.search = _load("mixture_search.py")
        c.finetune = ml_collections.ConfigDict()
        c.finetune.num_steps = 20_000
        c.finetune.global_batch_size = c.search.train.data.global_batch_size
        c.finetune.learning_rate = c.search.train.optimizer.learning_rate
        qat = _load("qat.py:q4_0")
        qat.model.quant = None  # set per scheme by the recipe
        qat.teacher.path = ""
        c.qat.train = qat
        c.report.extra_tasks = ("lee-sts", "pang-lee-polarity")
    c.lock()
    return c
