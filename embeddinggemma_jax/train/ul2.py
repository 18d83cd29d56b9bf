"""The UL2 adaptation stage: decoder-only Gemma 3 -> T5Gemma encoder-decoder -> the embedder's init.

`UL2Task` is the stage as a `TrainTask` for the generic `Trainer` (configs/ul2_adaptation.py,
``config.task = "ul2"``). Model: the T5Gemma encoder-decoder (`model.encoder_decoder`),
initialised from ``config.init_from``:

- ``""``: random weights, both stacks of ``config.model``'s shape (preset + shape fields);
- a Hugging Face Gemma 3 folder (Gemma3ForCausalLM / Gemma3ForConditionalGeneration), a Gemma 3
  ``.gguf`` file or a run directory of the causal_lm stage (`train.causal_lm`, whose tokenizer
  is then the default ``config.tokenizer``), read by `interop.huggingface.load_decoder_only`:
  T5Gemma's balanced init (encoder and decoder from the decoder-only weights, cross-attention
  from self-attention);
  ``config.ul2.decoder_from`` names a second, smaller decoder-only model for the unbalanced
  setting (cross-attention from scratch, trained alone for
  ``config.ul2.cross_attention_warmup_steps`` updates: the task's `trainable` rules).

Data: JSONL files (``config.train_data``, a path or glob; `readers.read_jsonl`) of JSON objects;
every non-empty string under one of ``config.ul2.text_fields`` is one sequence. Sequences are
tokenized without BOS/EOS, corrupted by `data.ul2` (deterministic per (``config.ul2.seed``,
sequence index)) and batched by `data.ul2.UL2Batcher` into ``config.data.global_batch_size`` rows
(``config.ul2.pack``: packed instead of padded). Files are read in order, epoch after epoch; the
iterator's state is the index of the next sequence.

Special tokens: sentinels are the tokenizer's ``<unused0>``, ``<unused1>``, ... (as many as the
lengths need), the three mode tokens the next unused pieces; a tokenizer without them gets ids
just past its vocabulary instead (`ul2_extra_rows` counts them; the decoder-only model must have
those rows: the causal_lm stage reserves them).

The pieces, each a pure function:

  init_ul2_params(config, rng, ...)  encoder-decoder params: T5Gemma init from a decoder-only
                                     model (balanced or unbalanced), or random
  make_ul2_loss_fn(config)           (params, batch, rng=None) -> (loss, metrics) on
                                     `data.ul2` batches: cross-entropy on decoder targets only
  cross_attention_warmup(steps)      the optimizer rules of the unbalanced warm-up
  extract_encoder(source, config)    {"encoder": adapted encoder, "head": fresh head}: the
                                     `EmbeddingGemma` params the pre-finetuning stage starts from
  export_embedder_init(source, config, folder, tokenizer=...)
                                     the same as a sentence-transformers folder, for the
                                     pre-finetuning config's ``init_from``
"""

from __future__ import annotations

import dataclasses
import functools
import glob
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.data.ul2 import UL2Batcher, UL2Config, default_denoisers
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.interop.huggingface import load_decoder_only
from embeddinggemma_jax.model.config import EXECUTION_FIELDS, ModelConfig
from embeddinggemma_jax.model.encoder_decoder import (
    CROSS_ATTENTION_PATTERN,
    EncoderDecoder,
    EncoderDecoderConfig,
    cross_attention_mask,
    encoder_decoder_logical_axes,
    encoder_decoder_param_shapes,
    init_encoder_decoder_params,
    t5gemma_init,
)
from embeddinggemma_jax.model.head import EmbeddingHead
from embeddinggemma_jax.model.model import param_shapes
from embeddinggemma_jax.readers import read_jsonl
from embeddinggemma_jax.train.config import setting, text_setting
from embeddinggemma_jax.train.optimizer import with_trainable_windows
from embeddinggemma_jax.train.step import TrainTask

UL2_BATCH_KEYS = (
    "encoder_input_ids",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_input_ids",
    "decoder_target_ids",
    "decoder_loss_mask",
    "decoder_segment_ids",
    "decoder_positions",
)


# -- stage init -----------------------------------------------------------------------------------
def init_ul2_params(
    config: EncoderDecoderConfig,
    rng: jax.Array,
    decoder_only: str | Path | Mapping | None = None,
    *,
    decoder_source: str | Path | Mapping | None = None,
    cross_attention_init: str | None = None,
) -> dict:
    """Encoder-decoder params for the UL2 stage.

    decoder_only: None (random init), a `Transformer` params pytree, or a path for
      `load_decoder_only`; the encoder (and, unless `decoder_source` is given, the decoder) start
      from it (T5Gemma). decoder_source: the unbalanced setting's smaller decoder-only model.
    """
    if decoder_only is None:
        if decoder_source is not None:
            raise ValueError("decoder_source needs decoder_only (the encoder's source) too")
        return init_encoder_decoder_params(config, rng)

    def params_of(src):
        if src is None or isinstance(src, Mapping):
            return src
        return load_decoder_only(src)[1]

    return t5gemma_init(
        params_of(decoder_only),
        config,
        decoder_source_params=params_of(decoder_source),
        cross_attention_init=cross_attention_init,
        rng=rng,
    )


# -- loss -----------------------------------------------------------------------------------------
def ul2_loss(
    logits_btv: jax.Array,
    targets_bt: jax.Array,
    weights_bt: jax.Array,
    *,
    z_loss: float = 0.0,
    denoiser_ids_bt: jax.Array | None = None,
    num_denoisers: int = 0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token cross-entropy, float32, averaged over target tokens with weight > 0.

    z_loss: weight of mean(log Z ** 2) (T5's auxiliary loss; 0 = off). With `denoiser_ids_bt` and
    `num_denoisers`, metrics also hold per-denoiser summed loss and token counts (`ce_sum_by_
    denoiser`, `tokens_by_denoiser`, [num_denoisers]) so callers can average them over steps.

    Returns: (scalar loss, {"loss", "cross_entropy", "z_loss", "accuracy", "tokens", ...}).
    """
    logits = logits_btv.astype(jnp.float32)
    w = weights_bt.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_bt[..., None].astype(jnp.int32), -1)[..., 0]
    ce_bt = log_z - target_logit
    tokens = jnp.sum(w)
    denom = jnp.maximum(tokens, 1.0)
    ce = jnp.sum(ce_bt * w) / denom
    zl = jnp.sum(jnp.square(log_z) * w) / denom
    loss = ce + z_loss * zl
    correct = (jnp.argmax(logits, -1) == targets_bt).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "cross_entropy": ce,
        "z_loss": zl,
        "accuracy": jnp.sum(correct * w) / denom,
        "tokens": tokens,
    }
    if denoiser_ids_bt is not None and num_denoisers:
        onehot = jax.nn.one_hot(denoiser_ids_bt, num_denoisers, dtype=jnp.float32) * w[..., None]
        metrics["ce_sum_by_denoiser"] = jnp.einsum("BT,BTM->M", ce_bt, onehot)
        metrics["tokens_by_denoiser"] = jnp.sum(onehot, axis=(0, 1))
    return loss, metrics


def _check_batch(batch: Mapping[str, Any]) -> None:
    missing = [k for k in UL2_BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"UL2 batch is missing {missing} (see data.ul2.pad_batch / pack_batch)")


def make_ul2_loss_fn(
    config: EncoderDecoderConfig, *, z_loss: float = 0.0, num_denoisers: int = 0
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """loss_fn(params, batch, rng=None) -> (loss, metrics) for `data.ul2` batches (padded or
    packed: segment ids and positions are used, loss only where `decoder_loss_mask` is 1)."""
    model = EncoderDecoder(config)

    def loss_fn(params, batch, rng=None):
        del rng  # Gemma has no dropout
        _check_batch(batch)
        logits = model.apply(
            {"params": params},
            batch["encoder_input_ids"],
            batch["decoder_input_ids"],
            batch["encoder_segment_ids"],
            batch["decoder_segment_ids"],
            batch["encoder_positions"],
            batch["decoder_positions"],
        )
        return ul2_loss(
            logits,
            batch["decoder_target_ids"],
            batch["decoder_loss_mask"],
            z_loss=z_loss,
            denoiser_ids_bt=batch.get("decoder_denoiser_ids"),
            num_denoisers=num_denoisers,
        )

    return loss_fn


# -- unbalanced warm-up ---------------------------------------------------------------------------
def cross_attention_warmup(steps: int) -> list[tuple[str, int | None, int | None]]:
    """``optimizer.trainable`` rules training only the decoder's cross-attention (and its norms)
    for the first `steps` updates, then everything (none for 0 steps)."""
    if steps < 0:
        raise ValueError(f"warm-up steps must be >= 0, got {steps}")
    if steps == 0:
        return []
    return [(CROSS_ATTENTION_PATTERN, None, None), (".*", steps, None)]


def with_cross_attention_warmup(
    tx: optax.GradientTransformation, params: Mapping, steps: int
) -> optax.GradientTransformation:
    """`tx` under `cross_attention_warmup(steps)` (`train.optimizer.with_trainable_windows`):
    for the first `steps` calls only the decoder's cross-attention changes."""
    rules = cross_attention_warmup(steps)
    if rules and not any(jax.tree.leaves(cross_attention_mask(params))):
        raise ValueError("params have no decoder cross-attention to warm up")
    return with_trainable_windows(tx, rules)


# -- hand-off to the embedder ---------------------------------------------------------------------
def _restore_checkpoint(path: str | Path) -> Any:
    """A pytree of host numpy arrays from a checkpoint: the params of a training run (any path
    `checkpoint.resolve_step_dir` takes: run directory, checkpoints folder, step folder), else a
    plain Orbax checkpoint written outside the Trainer (an item folder, or a CheckpointManager
    root whose newest step's items are returned by name)."""
    import orbax.checkpoint as ocp

    def restore(p: Path) -> Any:  # as host numpy arrays: independent of the saving topology
        # The item's own metadata: the checkpointer's would also look for a step's metadata
        # inside the item folder and warn that it is missing.
        meta = ocp.PyTreeCheckpointHandler().metadata(p)
        tree = getattr(meta, "tree", meta)
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ocp.PyTreeCheckpointer().restore(str(p), restore_args=args)

    def is_item(p: Path) -> bool:
        return (p / "_METADATA").exists() or (p / "manifest.ocdbt").exists()

    if checkpoint.is_checkpoint(path):
        return {"params": restore(checkpoint.resolve_step_dir(path) / "params")}
    p = checkpoint.as_path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    if is_item(p):
        return restore(p)
    steps = [q for q in p.iterdir() if q.is_dir() and q.name.isdigit()]
    step_dir = max(steps, key=lambda q: int(q.name)) if steps else p
    items = {q.name: q for q in step_dir.iterdir() if q.is_dir() and is_item(q)}
    if not items:
        raise ValueError(f"{path}: no Orbax checkpoint item found")
    return {name: restore(q) for name, q in items.items()}


def _find_encoder(tree: Any, where: str) -> Mapping:
    """The encoder params inside encoder-decoder params, a train state or a restored checkpoint."""
    if hasattr(tree, "params") and not isinstance(tree, Mapping):
        return _find_encoder(tree.params, f"{where}.params")
    if isinstance(tree, Mapping):
        if "encoder" in tree and "decoder" in tree:
            return tree["encoder"]
        for key in ("params", "state", "train_state", "default"):
            if key in tree:
                return _find_encoder(tree[key], f"{where}[{key!r}]")
    raise ValueError(
        f"{where}: no encoder-decoder params (a mapping with 'encoder' and 'decoder', possibly "
        "under 'params' / 'state')"
    )


def extract_encoder(
    source: str | Path | Mapping | Any,
    config: ModelConfig,
    rng: jax.Array | None = None,
) -> dict:
    """`EmbeddingGemma(config)` params whose encoder is the UL2-adapted encoder, with a freshly
    initialised head (from `rng`, default key 0).

    source: encoder-decoder params ({"encoder", "decoder"}), a train state / mapping holding them
      under "params", or an Orbax checkpoint directory of either.
    config: the embedder's ModelConfig (bidirectional; its encoder shape must match).

    Returns: {"encoder": float32 numpy arrays (copies), "head": float32 arrays}.
    """
    if not config.bidirectional:
        raise ValueError("extract_encoder: the embedder config must be bidirectional")
    where = "source"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = _restore_checkpoint(source)
    encoder = _find_encoder(source, where)
    want = param_shapes(config)["encoder"]
    got = dict(jax.tree_util.tree_flatten_with_path(encoder)[0])
    for key, spec in jax.tree_util.tree_flatten_with_path(want)[0]:
        if key not in got:
            raise ValueError(f"{where}: encoder has no {jax.tree_util.keystr(key)}")
        if tuple(np.shape(got[key])) != tuple(spec.shape):
            raise ValueError(
                f"{where}: encoder{jax.tree_util.keystr(key)} has shape {np.shape(got[key])}, "
                f"config expects {tuple(spec.shape)}"
            )
    if len(got) != len(jax.tree.leaves(want)):
        raise ValueError(f"{where}: encoder has parameters the config does not know")
    rng = jax.random.key(0) if rng is None else rng
    x = jnp.zeros((1, 1, config.embed_dim), jnp.float32)
    head = EmbeddingHead(config).init(rng, x, jnp.ones((1, 1), bool))["params"]
    return {
        "encoder": jax.tree.map(lambda a: np.array(a, np.float32), encoder),
        "head": nn.meta.unbox(head),
    }


def export_embedder_init(
    source: str | Path | Mapping | Any,
    config: ModelConfig,
    folder: str | Path,
    *,
    tokenizer: str | Path,
    rng: jax.Array | None = None,
    prompts: Mapping[str, str] | None = None,
) -> Path:
    """`extract_encoder` written as a sentence-transformers folder: the path the pre-finetuning
    stage's ``init_from`` takes. tokenizer: a SentencePiece tokenizer.model (or HF tokenizer
    folder) copied beside the weights; prompts: default the checkpoint's prompt table."""
    from embeddinggemma_jax.interop.sentence_transformers import save_sentence_transformer
    from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS

    params = extract_encoder(source, config, rng)
    return save_sentence_transformer(
        folder,
        params,
        config,
        prompts=dict(DEFAULT_PROMPTS if prompts is None else prompts),
        max_seq_length=config.max_length,
        tokenizer_source=tokenizer,
    )


# -- the stage as a TrainTask -------------------------------------------------------------------
def special_ids(tokenizer: Any, count: int) -> tuple[list[int], tuple[int, int, int]]:
    """(sentinel ids, (NLU, NLG, S2S) mode ids): the tokenizer's `<unusedN>` pieces (Gemma has
    thousands), else new ids just past its vocabulary (the model's table must then be larger)."""
    need = count + 3
    unk = getattr(tokenizer, "unk_id", -1)
    ids = [tokenizer.piece_to_id(f"<unused{i}>") for i in range(need)]
    if any(i == unk or i < 0 for i in ids) or len(set(ids)) != need:
        ids = list(range(tokenizer.vocab_size, tokenizer.vocab_size + need))
    return ids[:count], (ids[count], ids[count + 1], ids[count + 2])


def _ul2_config(cfg: Any, tokenizer: Any) -> UL2Config:
    enc = int(setting(cfg, "encoder_max_length", 512))
    dec = int(setting(cfg, "decoder_max_length", 512))
    s_fraction = float(setting(cfg, "s_fraction", 0.2))
    base = dict(
        decoder_start_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        denoisers=default_denoisers(s_fraction),
        encoder_max_length=enc,
        decoder_max_length=dec,
        seed=int(setting(cfg, "seed", 0)),
    )
    count = 8
    while True:  # the fewest sentinels the lengths need (UL2Config checks and says how many)
        sentinels, (nlu, nlg, s2s) = special_ids(tokenizer, count)
        try:
            return UL2Config(
                sentinel_ids=tuple(sentinels), nlu_id=nlu, nlg_id=nlg, s2s_id=s2s, **base
            )
        except ValueError as e:
            if "sentinels" not in str(e) or count > enc + dec:
                raise
            count *= 2


def ul2_extra_rows(tokenizer: Any, encoder_max_length: int, decoder_max_length: int) -> int:
    """Embedding rows past the tokenizer's pieces that the UL2 stage's sentinel and mode ids need
    at these lengths (0 when the tokenizer has enough `<unusedN>` pieces, as Gemma's has): what a
    decoder-only model trained for this stage reserves (`train.causal_lm`)."""
    cfg = _ul2_config(
        {"encoder_max_length": encoder_max_length, "decoder_max_length": decoder_max_length},
        tokenizer,
    )
    special = (*cfg.sentinel_ids, cfg.nlu_id, cfg.nlg_id, cfg.s2s_id)
    return max(0, max(special) + 1 - tokenizer.vocab_size)


class Sequences:
    """Token sequences from JSONL text files (`readers.read_jsonl`), in order, repeating: every
    non-empty string under one of `fields` of each record is one sequence."""

    def __init__(self, pattern: str, fields: tuple[str, ...], tokenizer: Any):
        self.paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not self.paths or not all(Path(p).is_file() for p in self.paths):
            raise LocatedError(f"no file matches {pattern!r}", where="config.train_data")
        self.fields, self.tokenizer = fields, tokenizer
        self.count = None

    @classmethod
    def from_config(cls, config: Any, stage_cfg: Any, stage: str, tokenizer: Any) -> Sequences:
        """The validated sequences of ``config.train_data`` under the stage section's
        ``text_fields`` (the causal-LM and UL2 stages read their text the same way)."""
        train_data = text_setting(config, "train_data")
        if not train_data:
            raise ValueError(
                f"config.train_data: the {stage} stage needs JSONL text files (path or glob)"
            )
        fields = tuple(setting(stage_cfg, "text_fields", ("text",)))
        sequences = cls(train_data, fields, tokenizer)
        sequences.validate()
        return sequences

    def _texts(self) -> Iterator[str]:
        for path in self.paths:
            for _, record in read_jsonl(path):
                for field in self.fields:
                    text = record.get(field)
                    if isinstance(text, str) and text.strip():
                        yield text

    def validate(self) -> None:
        n = sum(1 for _ in self._texts())
        if n == 0:
            raise LocatedError(
                f"no non-empty text under fields {list(self.fields)} in {self.paths}",
                where="config.train_data",
            )
        self.count = n

    def from_index(self, index: int) -> Iterator[tuple[int, np.ndarray]]:
        """(global sequence index, token ids) from `index` on, forever."""
        i = 0
        while True:
            for text in self._texts():
                if i >= index:
                    ids = self.tokenizer.encode_pieces([text])[0]
                    if ids:
                        yield i, np.asarray(ids, np.int32)
                i += 1


class TextStage(TrainTask):
    """What the causal-LM and UL2 stages share: text sequences from ``config.train_data``, padded
    or packed batches of them, a loss over the batch alone, the tokenizer saved beside the run."""

    shown_metrics = ("loss", "accuracy", "grad_norm")

    def _read_text(self, config: Any, stage_cfg: Any, stage: str) -> None:
        """global_batch_size, pack and the validated sequences (after ``self.tokenizer``)."""
        self.global_batch_size = int(setting(config.get("data"), "global_batch_size", 32))
        self.pack = bool(setting(stage_cfg, "pack", False))
        self.sequences = Sequences.from_config(config, stage_cfg, stage, self.tokenizer)

    def _resumed(self, it: Any, start_step: int) -> Any:
        """`it` (a batcher over ``self.sequences.from_index``) moved to `start_step`: padded
        batches take a fixed count of sequences per step, packed rows a varying one (stepped)."""
        if start_step and not self.pack:
            it.set_state({"index": start_step * self.global_batch_size})
        elif start_step:
            for _ in range(start_step):
                next(it)
        return it

    def value_and_grad(self, params, batch, rng, frozen):
        del frozen
        return jax.value_and_grad(self._loss_fn, has_aux=True)(params, batch, rng)

    def tokenizer_file(self) -> Path:
        return Path(self.tokenizer.path)


class UL2Task(TextStage):
    """The UL2 encoder-decoder stage (see the module docstring)."""

    name = "ul2"

    def __init__(self, config: Any, *, batch_shards: int = 1):
        del batch_shards
        from embeddinggemma_jax.text import Tokenizer
        from embeddinggemma_jax.train.contrastive import model_config_from

        self.config = config
        ul2_cfg = config.get("ul2")
        model_cfg = config.get("model")
        exec_overrides = {
            k: setting(model_cfg, k) for k in EXECUTION_FIELDS if setting(model_cfg, k)
        }
        tokenizer_path = text_setting(config, "tokenizer")
        self.init_from = text_setting(config, "init_from")
        if self.init_from and checkpoint.is_run_path(self.init_from):
            # A causal_lm run of ours: its tokenizer is the default, another one an error.
            step_dir, info = checkpoint.load_model_info(self.init_from)
            run_tokenizer = str(checkpoint.find_tokenizer(step_dir, info))
            if tokenizer_path and checkpoint.file_sha256(tokenizer_path) != checkpoint.file_sha256(
                run_tokenizer
            ):
                raise ValueError(
                    f"config.tokenizer {tokenizer_path} differs from the tokenizer of "
                    f"init_from={self.init_from!r} ({run_tokenizer}); leave it empty to use that one"
                )
            tokenizer_path = tokenizer_path or run_tokenizer
        if not tokenizer_path:
            raise ValueError("config.tokenizer: the UL2 stage needs a tokenizer.model path")
        self.tokenizer = Tokenizer(tokenizer_path)
        self.decoder_from = text_setting(ul2_cfg, "decoder_from")
        if self.decoder_from and not self.init_from:
            raise ValueError("ul2.decoder_from (unbalanced) needs init_from (the encoder's source)")
        if self.init_from:
            enc_src, self._enc_params = load_decoder_only(self.init_from, **exec_overrides)
            dec_src, self._dec_params = enc_src, None
            if self.decoder_from:
                dec_src, self._dec_params = load_decoder_only(self.decoder_from, **exec_overrides)
            self.model_config = EncoderDecoderConfig.unbalanced(enc_src, dec_src)
        self.ul2 = _ul2_config(ul2_cfg, self.tokenizer)
        special = (*self.ul2.sentinel_ids, self.ul2.nlu_id, self.ul2.nlg_id, self.ul2.s2s_id)
        rows = max(self.tokenizer.vocab_size, max(special) + 1)
        if not self.init_from:  # random init: room for the sentinels past the tokenizer's pieces
            base: ModelConfig = model_config_from(model_cfg, vocab_size=rows)
            self.model_config = EncoderDecoderConfig.balanced(base.replace(**exec_overrides))
            self._enc_params = self._dec_params = None
        if rows > self.model_config.encoder.vocab_size:
            hint = (
                f" (a decoder trained with configs/causal_lm.py reserves them: "
                f"causal_lm.extra_rows >= {rows - self.tokenizer.vocab_size})"
                if self.init_from
                else ""
            )
            raise ValueError(
                f"tokenizer {tokenizer_path} ({self.tokenizer.vocab_size} pieces) with the UL2 "
                f"sentinel and mode ids needs {rows} embedding rows; the model has "
                f"{self.model_config.encoder.vocab_size}{hint}"
            )
        self.cross_attention_init = setting(ul2_cfg, "cross_attention_init")
        self.warmup_steps = int(setting(ul2_cfg, "cross_attention_warmup_steps", 0))
        self._read_text(config, ul2_cfg, "UL2")
        self.compute_dtype = self.model_config.encoder.dtype
        self._loss_fn = make_ul2_loss_fn(
            self.model_config,
            z_loss=float(setting(ul2_cfg, "z_loss", 0.0)),
        )  # scalar metrics only (the trainer averages and logs every metric as a number)

    # -- model ----------------------------------------------------------------------------------
    def param_shapes(self):
        return encoder_decoder_param_shapes(self.model_config)

    def param_logical_axes(self):
        return encoder_decoder_logical_axes(self.model_config)

    def initial_params(self, rng, shardings):
        if not self.init_from:
            init = functools.partial(init_encoder_decoder_params, self.model_config)
            return jax.jit(init, out_shardings=shardings)(rng)
        params = init_ul2_params(
            self.model_config,
            rng,
            self._enc_params,
            decoder_source=self._dec_params,
            cross_attention_init=self.cross_attention_init,
        )
        self._enc_params = self._dec_params = None  # host copies no longer needed
        return jax.device_put(params, shardings)

    def trainable(self):
        """The unbalanced warm-up: only cross-attention trains for the first
        ``ul2.cross_attention_warmup_steps`` updates."""
        return cross_attention_warmup(self.warmup_steps)

    # -- data -----------------------------------------------------------------------------------
    def data_iterator(self, start_step: int = 0):
        it = UL2Batcher(
            self.sequences.from_index,
            self.ul2,
            self.global_batch_size,
            pack=self.pack,
            pad_id=self.tokenizer.pad_id,
        )
        return self._resumed(it, start_step)

    def batch_stats(self, host_batch: Mapping[str, Any]) -> dict[str, float]:
        tokens = float(np.sum(host_batch["encoder_segment_ids"] > 0)) + float(
            np.sum(host_batch["decoder_loss_mask"])
        )
        return {"tokens": tokens, "flops": 0.0}

    # -- export ---------------------------------------------------------------------------------
    def export_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "encoder_decoder_config": {
                "encoder": dataclasses.asdict(self.model_config.encoder),
                "decoder": dataclasses.asdict(self.model_config.decoder),
            },
            "tokenizer": checkpoint.tokenizer_info(self.tokenizer.path),
            "ul2": {
                "encoder_max_length": self.ul2.encoder_max_length,
                "decoder_max_length": self.ul2.decoder_max_length,
                "sentinel_ids": list(self.ul2.sentinel_ids),
                "mode_ids": [self.ul2.nlu_id, self.ul2.nlg_id, self.ul2.s2s_id],
                "denoisers": [dataclasses.asdict(d) for d in self.ul2.denoisers],
            },
        }
