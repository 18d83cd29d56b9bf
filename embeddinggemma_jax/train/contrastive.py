"""The contrastive stages (pre-finetuning, finetuning) as a `TrainTask`.

Model: `EmbeddingGemma`, initialised from (``config.init_from``)

- ``""``: random weights of ``config.model`` (vocab size: the tokenizer's unless set);
- a training workdir / step folder (Orbax, an earlier stage): its parameters and model config;
  a UL2 run (`train.ul2`) gives its adapted encoder and a fresh head (`ul2.extract_encoder`;
  ``config.model.head_dims`` / ``matryoshka_dims`` may set the new head's shape);
- anything else: a sentence-transformers / Hugging Face folder or hub id
  (`interop.load_sentence_transformer`), e.g. google/embeddinggemma-300m.

A fresh head (random init, a UL2 encoder) starts whitened with ``config.head_init.whiten``: its
first projection preceded by the whitening of the encoder's pooled states on the first training
batch (`model.init.whiten_head`).

``config.model``'s execution fields (`model.config.EXECUTION_FIELDS`) always apply; its shape fields
only to random init. Data: `embeddinggemma_jax.data` (``config.data``). Objective:
`losses.embeddinggemma_loss` with ``config.loss`` (Matryoshka dims default to the model's), with
GradCache when ``config.grad_cache.chunk`` is set. Distillation: precomputed teacher embeddings
from datasets with ``teacher=True``, else a frozen teacher model (``config.teacher.path``, any
`Embedder`-loadable checkpoint sharing the tokenizer) run inside the step.
Evaluation: a retrieval task folder or built-in name (``config.eval.task``), nDCG@10 / recall@10.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.losses import embeddinggemma_loss_fn
from embeddinggemma_jax.model import (
    EmbeddingGemma,
    ModelConfig,
    init_params,
    param_logical_axes,
    param_shapes,
)
from embeddinggemma_jax.model.config import EXECUTION_FIELDS, layer_pattern
from embeddinggemma_jax.train import perf
from embeddinggemma_jax.train.config import setting, text_setting
from embeddinggemma_jax.train.gradcache import (
    embed_batch,
    full_batch_value_and_grad,
    gradcache_value_and_grad,
)
from embeddinggemma_jax.train.step import TrainTask

SHAPE_FIELDS = (
    "vocab_size",
    "embed_dim",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "mlp_dim",
    "layer_types",
    "sliding_window",
    "query_pre_attn_scalar",
    "max_length",
    "head_dims",
    "matryoshka_dims",
)
PRESETS = ("tiny", "embeddinggemma_300m")
ROLES = ("query", "positive", "negative")


def _as_dict(cfg: Any) -> dict:
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def model_config_from(model_cfg: Any, vocab_size: int | None = None) -> ModelConfig:
    """A random-init ModelConfig: ``preset`` plus the shape fields set in `model_cfg`."""
    fields = _as_dict(model_cfg)
    preset = fields.pop("preset", "tiny")
    if preset not in PRESETS:
        raise ValueError(f"model.preset must be one of {PRESETS}, got {preset!r}")
    unknown = set(fields) - set(SHAPE_FIELDS) - set(EXECUTION_FIELDS)
    if unknown:
        raise ValueError(f"model: unknown keys {sorted(unknown)}")
    base = getattr(ModelConfig, preset)()
    changes = {k: v for k, v in fields.items() if v is not None}
    for k in ("layer_types", "head_dims", "matryoshka_dims"):
        if k in changes:
            changes[k] = tuple(changes[k])
    if "vocab_size" not in changes and vocab_size is not None:
        changes["vocab_size"] = int(vocab_size)
    if "num_layers" in changes and "layer_types" not in changes:
        changes["layer_types"] = layer_pattern(changes["num_layers"])
    return _with_head(base, changes)


HEAD_FIELDS = ("head_dims", "matryoshka_dims")
FRESH_HEAD = ("random", "ul2")  # init kinds whose head starts random


def _with_head(base: ModelConfig, changes: dict[str, Any]) -> ModelConfig:
    """`base` with `changes`; new head_dims without matryoshka_dims keep the dims that fit."""
    if "head_dims" in changes and "matryoshka_dims" not in changes:
        out = (
            changes["head_dims"][-1]
            if changes["head_dims"]
            else changes.get("embed_dim", base.embed_dim)
        )
        changes["matryoshka_dims"] = (out, *[d for d in base.matryoshka_dims if d < out])
    return dataclasses.replace(base, **changes)


def _exec_overrides(model_cfg: Any) -> dict[str, Any]:
    """The execution fields this run sets. `quant` always: a run started from a QAT checkpoint
    trains in float unless it asks for a scheme itself (a QAT checkpoint is a float one)."""
    out = {k: setting(model_cfg, k) for k in EXECUTION_FIELDS if setting(model_cfg, k) is not None}
    return {"quant": setting(model_cfg, "quant"), **out}


def _check_no_shape_overrides(model_cfg: Any, source: str, allowed: tuple[str, ...] = ()) -> None:
    set_fields = [k for k in SHAPE_FIELDS if setting(model_cfg, k) is not None and k not in allowed]
    if set_fields:
        raise ValueError(
            f"model.{set_fields[0]} is set, but the model's shape comes from init_from={source!r}; "
            f"unset the model shape fields (only {' / '.join(EXECUTION_FIELDS)} apply)"
        )


def check_tokenizer_fits(tokenizer: Any, tokenizer_path: str, model_config: ModelConfig) -> None:
    """ValueError unless the model embeds every piece of `tokenizer` and pads with its pad id."""
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(
            f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} pieces but the model's "
            f"embedding table has {model_config.vocab_size} rows"
        )
    if tokenizer.pad_id != model_config.pad_id:
        raise ValueError(
            f"tokenizer pad id {tokenizer.pad_id} != model pad_id {model_config.pad_id}"
        )


def local_copy(tree: Any) -> Any:
    """Arrays this process can read whole (multi-host: replicated, then the local copy)."""
    if jax.process_count() == 1:
        return tree
    leaves = jax.tree.leaves(tree)
    mesh = next((x.sharding.mesh for x in leaves if hasattr(x.sharding, "mesh")), None)
    if mesh is None:
        return tree
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    tree = jax.jit(lambda t: t, out_shardings=rep)(tree)
    return jax.tree.map(lambda x: x.addressable_data(0), tree)


def data_mapping(config: Any) -> dict[str, Any]:
    """``config.data`` as a dict for `DataConfig.from_mapping`, with ``config.train_data``
    (a path or glob) replacing the path of its single dataset."""
    data = _as_dict(config.data)
    train_data = text_setting(config, "train_data")
    if train_data:
        datasets = list(data.get("datasets") or [])
        if len(datasets) != 1:
            raise ValueError(
                f"train_data={train_data!r} needs exactly one dataset in data.datasets, "
                f"got {len(datasets)}"
            )
        data["datasets"] = [{**_as_dict(datasets[0]), "path": train_data}]
    for i, d in enumerate(data.get("datasets") or []):
        if not str(_as_dict(d).get("path") or ""):
            raise ValueError(
                f"data.datasets[{i}].path is empty (set it, or --config.train_data=PATH)"
            )
    if isinstance(data.get("validate"), str) and data["validate"].isdigit():
        data["validate"] = int(data["validate"])
    return data


class ContrastiveTask(TrainTask):
    """EmbeddingGemma contrastive training (see the module docstring)."""

    name = "contrastive"
    shown_metrics = ("loss", "contrastive", "spread_out", "distill", "top1_accuracy", "grad_norm")

    def __init__(self, config: Any, *, batch_shards: int = 1):
        from embeddinggemma_jax.data import DataConfig
        from embeddinggemma_jax.text import DEFAULT_PROMPTS, Tokenizer

        self.config = config
        init_from = text_setting(config, "init_from")
        tokenizer_path = text_setting(config, "tokenizer")
        model_cfg = config.get("model")
        exec_overrides = _exec_overrides(model_cfg)
        self._loaded_params = None
        self._init_kind = "random"
        default_tokenizer = None
        stored_prompts = None
        if init_from and checkpoint.is_run_path(init_from):
            step_dir, info = checkpoint.load_model_info(init_from)
            if "model_config" in info:
                _check_no_shape_overrides(model_cfg, init_from)
                self.model_config = dataclasses.replace(
                    checkpoint._model_config(info), **exec_overrides
                )
                self._init_kind = "checkpoint"
            elif "encoder_decoder_config" in info:  # a UL2 run: its encoder, a fresh head
                _check_no_shape_overrides(model_cfg, init_from, allowed=HEAD_FIELDS)
                encoder = info["encoder_decoder_config"]["encoder"]
                head = {
                    k: tuple(setting(model_cfg, k)) for k in HEAD_FIELDS if setting(model_cfg, k)
                }
                self.model_config = _with_head(
                    checkpoint._model_config({"model_config": encoder}),
                    {**head, "bidirectional": True, **exec_overrides},
                )
                self._init_kind = "ul2"
            else:
                raise ValueError(
                    f"init_from={init_from!r}: {step_dir} holds no embedding model and no UL2 "
                    f"encoder (task {info.get('task')!r})"
                )
            self._init_path = step_dir
            default_tokenizer = checkpoint.find_tokenizer(step_dir, info)
            stored_prompts = info.get("prompts")
        elif init_from:
            from embeddinggemma_jax.interop import load_sentence_transformer

            _check_no_shape_overrides(model_cfg, init_from)
            self.model_config, self._loaded_params, folder = load_sentence_transformer(
                init_from, **exec_overrides
            )
            self._init_kind = "sentence_transformers"
            default_tokenizer = folder.tokenizer_file
            stored_prompts = folder.prompts
        if not tokenizer_path:
            if default_tokenizer is None:
                raise ValueError(
                    "config.tokenizer: no tokenizer given (a path to a SentencePiece "
                    f"tokenizer.model{', and init_from has none' if init_from else ''})"
                )
            tokenizer_path = str(default_tokenizer)
        self.tokenizer = Tokenizer(tokenizer_path)
        if self._init_kind == "random":
            self.model_config = dataclasses.replace(
                model_config_from(model_cfg, vocab_size=self.tokenizer.vocab_size),
                **exec_overrides,
            )
        check_tokenizer_fits(self.tokenizer, tokenizer_path, self.model_config)

        self.data_config = DataConfig.from_mapping(data_mapping(config))
        self.prompts = dict(self.data_config.prompts or stored_prompts or DEFAULT_PROMPTS)
        self.global_batch_size = self.data_config.global_batch_size
        self.compute_dtype = self.model_config.dtype
        loss = {k: v for k, v in _as_dict(config.get("loss")).items() if v is not None}
        loss.setdefault("matryoshka_dims", self.model_config.matryoshka_dims)
        loss["matryoshka_dims"] = tuple(loss["matryoshka_dims"])
        bad = [d for d in loss["matryoshka_dims"] if d > self.model_config.output_dim]
        if bad:
            raise ValueError(
                f"loss.matryoshka_dims {bad} exceed the model's output dim "
                f"{self.model_config.output_dim}"
            )
        self.loss_kwargs = loss
        self._loss_fn = embeddinggemma_loss_fn(**loss)
        self.chunk = setting(config.get("grad_cache"), "chunk")
        if self.chunk is not None:
            self.chunk = int(self.chunk)
            if self.chunk < 1 or self.chunk % batch_shards:
                raise ValueError(
                    f"grad_cache.chunk={self.chunk} must be a positive multiple of the {batch_shards} "
                    "batch shards of the mesh (data x fsdp)"
                )
        self.model = EmbeddingGemma(self.model_config)
        self._load_teacher(config.get("teacher"))
        self._load_eval(config.get("eval"))

    # -- teacher --------------------------------------------------------------------------------
    def _load_teacher(self, cfg: Any) -> None:
        self.teacher_config = self.teacher_params = None
        path = text_setting(cfg, "path")
        if not path:
            return
        from embeddinggemma_jax.embedder import Embedder

        teacher = Embedder.from_pretrained(path, dtype=setting(cfg, "dtype", "float32"))
        mine = checkpoint.file_sha256(self.tokenizer.path)
        theirs = checkpoint.file_sha256(teacher.tokenizer.path)
        if mine != theirs:
            raise ValueError(
                f"teacher.path={path!r} uses another tokenizer ({teacher.tokenizer.path}) than the "
                f"student ({self.tokenizer.path}); a frozen teacher must share the tokenizer "
                "(or precompute teacher embeddings into the data)"
            )
        self.teacher_config = teacher.config
        self.teacher_params = jax.device_get(teacher.params)
        self.teacher_model = EmbeddingGemma(teacher.config)
        self.teacher_chunk = setting(cfg, "chunk")
        logging.info("frozen teacher %s (output dim %d)", path, teacher.config.output_dim)

    # -- eval -----------------------------------------------------------------------------------
    def _load_eval(self, cfg: Any) -> None:
        self.eval_task = None
        spec = text_setting(cfg, "task")
        if not spec:
            return
        from embeddinggemma_jax.eval import get_task

        self.eval_task = get_task(spec)
        if not hasattr(self.eval_task, "qrels"):
            raise ValueError(f"eval.task={spec!r} is a {self.eval_task.type} task, not retrieval")
        prompt = setting(cfg, "query_prompt")
        if prompt:
            if prompt not in self.prompts:
                raise ValueError(
                    f"eval.query_prompt={prompt!r} is not in the prompt table ({sorted(self.prompts)})"
                )
            self.eval_task.query_prompt = prompt
        dims = tuple(setting(cfg, "dims", ()) or ()) or (self.model_config.output_dim,)
        self.eval_dims = tuple(int(d) for d in dims)
        self.eval_metrics = tuple(setting(cfg, "metrics", ("ndcg_at_10", "recall_at_10")))
        self.eval_batch_size = int(setting(cfg, "batch_size", 64))
        self.eval_max_length = int(
            setting(cfg, "max_length", 0)
            or max(self.data_config.query_max_length, self.data_config.doc_max_length)
        )
        self._embedder = None

    # -- TrainTask: model ---------------------------------------------------------------------
    def param_shapes(self):
        return param_shapes(self.model_config)

    def param_logical_axes(self):
        return param_logical_axes(self.model_config)

    def initial_params(self, rng, shardings):
        params = self._initial_params(rng, shardings)
        head_init = self.config.get("head_init")
        if head_init is not None and head_init.get("whiten") and self._init_kind in FRESH_HEAD:
            params = jax.device_put(self._whitened_head(params), shardings)
        return params

    def _whitened_head(self, params):
        """`model.init.whiten_head` on the first training batch's queries and positives."""
        from embeddinggemma_jax.model.init import whiten_head

        batch = next(iter(self.data_iterator(0)))
        rows = [batch[role] for role in ("query", "positive")]
        width = max(r["tokens"].shape[1] for r in rows)
        tokens, mask = (
            np.concatenate([np.pad(r[k], ((0, 0), (0, width - r[k].shape[1]))) for r in rows])
            for k in ("tokens", "mask")
        )
        return whiten_head(params, self.model_config, tokens, mask)

    def _initial_params(self, rng, shardings):
        if self._init_kind == "random":
            from embeddinggemma_jax.model.init import apply_random_init, random_init_options

            cfg = self.model_config
            options = random_init_options(self.config)

            def init(r):
                params = init_params(cfg, r)
                return {**params, "encoder": apply_random_init(params["encoder"], r, *options)}

            return jax.jit(init, out_shardings=shardings)(rng)
        if self._init_kind == "ul2":
            from embeddinggemma_jax.train.ul2 import extract_encoder

            return jax.device_put(
                extract_encoder(self._init_path, self.model_config, rng), shardings
            )
        if self._init_kind == "checkpoint":
            target = jax.tree.map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                self.param_shapes(),
                shardings,
            )
            return checkpoint.restore_params(self._init_path, target)
        params = jax.tree.map(lambda x: np.asarray(x, np.float32), self._loaded_params)
        self._loaded_params = None  # the host copy is not needed any more
        return jax.device_put(params, shardings)

    def frozen_params(self):
        if self.teacher_params is None:
            return None, None
        return self.teacher_params, param_logical_axes(self.teacher_config)

    # -- TrainTask: data ----------------------------------------------------------------------
    def data_iterator(self, start_step: int = 0):
        from embeddinggemma_jax.data import DataPipeline

        pipeline = DataPipeline(self.data_config, self.tokenizer, prompts=self.prompts)
        return pipeline.iterator(start_step)

    def device_batch(self, host_batch: Mapping[str, Any], sharding) -> dict[str, Any]:
        from embeddinggemma_jax.data import place_batch

        g = place_batch(host_batch, sharding, pad_id=self.tokenizer.pad_id)
        out = {
            "query": g["query"],
            "positive": g["positive"],
            "q_ids": g["query_ids"],
            "p_ids": g["positive_ids"],
        }
        if "negatives" in g:
            out["negative"] = g["negatives"]
        if "teacher" in g:
            t = g["teacher"]
            out["teacher"] = {"query": t["query"], "positive": t["positive"]}
            if "negatives" in t:
                out["teacher"]["negative"] = t["negatives"]
        return out

    def batch_stats(self, host_batch: Mapping[str, Any]) -> dict[str, float]:
        lengths = [
            np.sum(host_batch[r]["mask"], axis=-1).reshape(-1)
            for r in ("query", "positive", "negatives")
            if r in host_batch
        ]
        lengths = np.concatenate(lengths)
        forward = perf.forward_flops(self.model_config, lengths)
        flops = 3.0 * forward
        if self.teacher_config is not None and "teacher" not in host_batch:
            flops += perf.forward_flops(self.teacher_config, lengths)
        return {"tokens": float(lengths.sum()), "flops": flops}

    # -- TrainTask: objective -----------------------------------------------------------------
    def _embed(self, params, inputs):
        return self.model.apply({"params": params}, inputs["tokens"], inputs["mask"])

    def _teacher_embed(self, params, inputs):
        return self.teacher_model.apply({"params": params}, inputs["tokens"], inputs["mask"])

    def value_and_grad(self, params, batch, rng, frozen):
        del rng  # the encoder is deterministic (no dropout)
        roles = {r: batch[r] for r in ROLES if r in batch}
        extra = {"q_ids": batch["q_ids"], "p_ids": batch["p_ids"]}
        if "teacher" in batch:
            extra["teacher"] = batch["teacher"]
        elif frozen is not None:
            chunk = self.teacher_chunk or self.chunk
            extra["teacher"] = embed_batch(self._teacher_embed, frozen, roles, chunk)
        if self.chunk:
            fn = gradcache_value_and_grad(self._embed, self._loss_fn, self.chunk)
        else:
            fn = full_batch_value_and_grad(self._embed, self._loss_fn)
        return fn(params, roles, extra)

    # -- evaluation and export ----------------------------------------------------------------
    def evaluate(self, params, step: int) -> dict[str, float] | None:
        if self.eval_task is None:
            return None
        from embeddinggemma_jax.embedder import Embedder
        from embeddinggemma_jax.eval import TruncatingEncoder

        params = local_copy(params)
        if self._embedder is None:
            self._embedder = Embedder(
                self.model_config,
                params,
                self.tokenizer,
                prompts=self.prompts,
                max_length=self.eval_max_length,
            )
        self._embedder.params = params
        embedder, bs = self._embedder, self.eval_batch_size
        full = self.model_config.output_dim

        def encode(texts, prompt_name, dim):
            return embedder.encode(list(texts), prompt_name=prompt_name, dim=dim, batch_size=bs)

        results = self.eval_task.evaluate(TruncatingEncoder(encode, full), self.eval_dims)
        out = {}
        for i, dim in enumerate(self.eval_dims):
            suffix = "" if i == 0 else f"@{dim}"
            for name in self.eval_metrics:
                if name not in results[dim]:
                    raise ValueError(
                        f"eval.metrics: {name!r} is not a retrieval metric "
                        f"({', '.join(sorted(results[dim]))})"
                    )
                out[name + suffix] = float(results[dim][name])
        return out

    def export_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_config": dataclasses.asdict(self.model_config),
            "prompts": self.prompts,
            "tokenizer": checkpoint.tokenizer_info(self.tokenizer.path),
            "max_length": max(self.data_config.query_max_length, self.data_config.doc_max_length),
        }

    def tokenizer_file(self) -> Path:
        return Path(self.tokenizer.path)
