"""The experiment config every configs/*.py starts from: all keys, with defaults.

``configs/x.py`` exposes ``get_config(arg=None)`` returning ``base_config()`` changed and locked;
overrides come from the command line (``--config.optimizer.learning_rate=3e-4``). A key set to
None (an ml_collections placeholder) means "the default of whatever it configures".
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from embeddinggemma_jax import parallel
from embeddinggemma_jax.train import optimizer


def setting(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` of a config section (a ConfigDict, mapping or object), `default` where the
    section is None or the key is missing or None (a placeholder: "the default")."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def text_setting(cfg: Any, key: str) -> str:
    """`setting` as a string: "" where unset (paths, specs)."""
    return str(setting(cfg, key) or "")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "contrastive"
    c.seed = 0
    c.num_steps = 1000
    # "" (random init of config.model), a sentence-transformers / Hugging Face folder or hub id,
    # or an Orbax workdir / step folder of an earlier stage (params only, fresh optimizer).
    c.init_from = ""
    c.tokenizer = ""  # tokenizer.model; "" = the one of init_from
    c.train_data = ""  # shortcut: replaces the path of the single dataset in data.datasets
    # A step the Trainer runs first, before it opens the data: "module:function", called as
    # function(config) (it may point config at what it built); "" = none.
    c.prepare = ""
    c.distributed = "auto"  # jax.distributed.initialize(): auto | on | off
    c.peak_flops_per_device = config_dict.placeholder(float)  # MFU; None: table by device kind

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.logical_axis_rules = parallel.DEFAULT_RULES

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # tiny | embeddinggemma_300m (random init only)
    for name, kind in (
        ("vocab_size", int),  # default: the tokenizer's size
        ("embed_dim", int),
        ("num_layers", int),
        ("num_heads", int),
        ("num_kv_heads", int),
        ("head_dim", int),
        ("mlp_dim", int),
        ("layer_types", tuple),  # default: Gemma 3's 5 local : 1 global for num_layers
        ("sliding_window", int),
        ("query_pre_attn_scalar", float),
        ("max_length", int),
        ("head_dims", tuple),
        ("matryoshka_dims", tuple),
    ):
        c.model[name] = config_dict.placeholder(kind)
    # Random init only: the token table's std (None: the model's 0.02). Gemma scales embeddings by
    # sqrt(D), so 0.02 gives unit-RMS token vectors only at D ~ 2500; tiny models from scratch
    # keep the tokens' identity in the residual stream with std ~ 1 / sqrt(D).
    c.random_init = ml_collections.ConfigDict()
    c.random_init.embedding_std = config_dict.placeholder(float)
    # Random init only: what each layer's residual branches are multiplied by at the start (the
    # post-norms' 1 + scale; None: 1). Small values start a model from scratch close to its
    # skip path (pooled token embeddings), as SkipInit / ReZero do.
    c.random_init.residual_scale = config_dict.placeholder(float)
    # A fresh head (random init or a UL2 encoder): its first projection starts with a whitening of
    # the encoder's pooled states on the first training batch (`model.init.whiten_head`).
    c.head_init = ml_collections.ConfigDict()
    c.head_init.whiten = False
    c.model.dtype = "float32"  # compute dtype; params stay float32
    c.model.attention_impl = "auto"
    c.model.remat = "none"
    c.model.scan_layers = False  # lax.scan over the repeating layer pattern: faster compiles

    c.data = ml_collections.ConfigDict()
    c.data.datasets = [dict(path="", weight=1.0, task="query", num_negatives=0)]
    c.data.global_batch_size = 32
    c.data.query_max_length = 128
    c.data.doc_max_length = 512
    c.data.buckets = config_dict.placeholder(tuple)
    c.data.min_bucket = 16
    c.data.seed = 0
    c.data.shuffle = True
    c.data.prompts = config_dict.placeholder(dict)
    c.data.validate = "all"  # all | none | a record count per dataset
    c.data.num_threads = 2
    c.data.prefetch_buffer_size = 4

    c.loss = ml_collections.ConfigDict()
    c.loss.temperature = 0.05
    c.loss.hard_negative_alpha = 5.0
    c.loss.include_positive_in_denominator = False
    c.loss.spread_out_weight = 1.0
    c.loss.distill_weight = 1.0
    c.loss.matryoshka_dims = config_dict.placeholder(tuple)  # default: the model's
    c.loss.distill_distance = "squared_l2"

    c.grad_cache = ml_collections.ConfigDict()
    c.grad_cache.chunk = config_dict.placeholder(int)  # rows per sub-batch; None: off

    c.teacher = ml_collections.ConfigDict()
    c.teacher.path = ""  # frozen teacher: any Embedder-loadable checkpoint (same tokenizer)
    c.teacher.dtype = "float32"
    c.teacher.chunk = config_dict.placeholder(
        int
    )  # teacher rows per forward (default: grad_cache.chunk)

    c.optimizer = ml_collections.ConfigDict(dict(optimizer.DEFAULTS))

    # A step whose loss or gradient is NaN / inf: "skip" (default) keeps the params and optimizer
    # state as they were and counts it, failing after max_consecutive skips in a row; "apply"
    # updates anyway (the old behaviour: the NaN reaches the params).
    c.nonfinite = ml_collections.ConfigDict()
    c.nonfinite.policy = "skip"
    c.nonfinite.max_consecutive = 10

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1000
    c.checkpoint.keep = 3
    c.checkpoint.best_metric = "ndcg_at_10"
    c.checkpoint.best_mode = "max"
    c.checkpoint.async_save = True

    c.log = ml_collections.ConfigDict()
    c.log.every = 10
    c.log.tensorboard = True
    c.log.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.task = ""  # retrieval task folder (BEIR layout) or built-in name; "" = no evaluation
    c.eval.query_prompt = config_dict.placeholder(str)  # prompt name for the task's queries
    c.eval.every = 0
    c.eval.at_start = False
    c.eval.at_end = True
    c.eval.dims = config_dict.placeholder(tuple)  # default: the model's output dim
    c.eval.metrics = ("ndcg_at_10", "recall_at_10")
    c.eval.batch_size = 64
    c.eval.max_length = config_dict.placeholder(int)  # default: the data's longest max length
    return c
