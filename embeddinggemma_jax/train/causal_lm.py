"""The causal-LM stage: a decoder-only Gemma 3 trained from random weights, the UL2 stage's start.

`CausalLMTask` is the stage as a `TrainTask` (configs/causal_lm.py, ``config.task =
"causal_lm"``). Model: `Transformer` with causal attention (``bidirectional=False``) and tied LM
logits, randomly initialised with ``config.model``'s shape (preset + shape fields, as the other
stages' random init). Vocabulary: the tokenizer's pieces plus ``config.causal_lm.extra_rows``
rows the UL2 stage needs for its sentinel and mode ids when the tokenizer has no ``<unusedN>``
pieces (our SentencePiece tokenizers have none; None = as many as UL2 needs at 512 / 512 tokens,
0 with Gemma's tokenizer); ``config.model.vocab_size`` replaces the sum when set.

Data: the UL2 stage's reader (`train.ul2.Sequences`: ``config.train_data`` JSONL path or glob,
every non-empty string under ``config.causal_lm.text_fields``), each sequence ``BOS + ids + EOS``
cut to ``config.causal_lm.max_length`` (a cut one has no EOS), one per row or packed in order
(``config.causal_lm.pack``; segment ids and per-text positions keep texts apart). The iterator's
state is the index of the first sequence not in an emitted batch, so a resumed run reads exactly
what an uninterrupted one would. Objective: next-token cross-entropy on real tokens (each text's
own next token; padding and the first token of the next packed text are not targets), with
``config.causal_lm.z_loss``.

The next stage reads a run of this task with `interop.huggingface.load_decoder_only` (the UL2
stage's ``init_from``), through `load_causal_lm`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.transformer import Transformer
from embeddinggemma_jax.text.packing import pack_rows
from embeddinggemma_jax.train import perf
from embeddinggemma_jax.train.config import setting, text_setting
from embeddinggemma_jax.train.ul2 import TextStage, ul2_extra_rows

# The export_info key of the decoder's ModelConfig; not "model_config", which marks an
# embedding model for `checkpoint.load_for_inference`.
DECODER_CONFIG = "decoder_config"
# UL2 lengths the default `extra_rows` makes room for (configs/ul2_adaptation.py's).
UL2_LENGTHS = (512, 512)


# -- model ----------------------------------------------------------------------------------------
def _init(config: ModelConfig, rng: jax.Array):
    return Transformer(config).init(rng, jnp.ones((1, 8), jnp.int32))["params"]


def causal_lm_param_shapes(config: ModelConfig) -> dict:
    """ShapeDtypeStruct pytree of `Transformer(config)`'s params, nothing allocated."""
    return nn.meta.unbox(jax.eval_shape(functools.partial(_init, config), jax.random.key(0)))


def causal_lm_logical_axes(config: ModelConfig) -> dict:
    """PartitionSpecs of logical axis names, matching `causal_lm_param_shapes`."""
    return nn.get_partition_spec(
        jax.eval_shape(functools.partial(_init, config), jax.random.key(0))
    )


def causal_lm_logits(
    config: ModelConfig,
    params: Mapping,
    tokens_bt: jax.Array,
    segments_bt: jax.Array,
    positions_bt: jax.Array,
) -> jax.Array:
    """Next-token logits [B, T, V] float32 of `Transformer(config)` (causal) on (packed) rows."""
    if config.bidirectional:
        raise ValueError("causal_lm_logits needs a causal config (bidirectional=False)")
    model = Transformer(config)
    x_btd = model.apply({"params": params}, tokens_bt, None, segments_bt, positions_bt)
    return model.apply({"params": params}, x_btd, method=Transformer.logits)


def make_causal_lm_loss_fn(
    config: ModelConfig, *, z_loss: float = 0.0
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """loss_fn(params, batch, rng=None) -> (loss, metrics) on `causal_lm_rows` batches: token t
    predicts token t + 1 where both are real tokens of the same text (`ul2_loss`' metrics)."""
    from embeddinggemma_jax.train.ul2 import ul2_loss

    def loss_fn(params, batch, rng=None):
        del rng  # Gemma has no dropout
        tokens, segments = batch["tokens"], batch["segments"]
        logits = causal_lm_logits(config, params, tokens, segments, batch["positions"])
        same_text = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
        return ul2_loss(logits[:, :-1], tokens[:, 1:], same_text, z_loss=z_loss)

    return loss_fn


# -- data -----------------------------------------------------------------------------------------
def lm_sequence(ids: Sequence[int], length: int, bos_id: int, eos_id: int | None) -> np.ndarray:
    """``BOS + ids (+ EOS)`` cut to `length` tokens (leading tokens kept), int32."""
    tail = [] if eos_id is None else [eos_id]
    return np.asarray([bos_id, *ids, *tail][:length], np.int32)


def causal_lm_rows(
    sequences: Sequence[np.ndarray], num_rows: int, length: int, *, pack: bool, pad_id: int = 0
) -> tuple[dict[str, np.ndarray], int]:
    """The leading `sequences` (each at most `length` tokens) laid into [num_rows, length] rows:
    one per row, or (`pack`) in order, each in the current row while it fits, else the next.

    Returns ({"tokens", "segments", "positions"} int32 (`text.packing.pack_rows`), how many of
    `sequences` were placed); rows left over are padding.
    """
    rows: list[list[int]] = []
    room = 0
    for i, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"sequence {i} has {len(seq)} tokens, over the row length {length}")
        if pack and rows and len(seq) <= room:
            rows[-1].append(i)
            room -= len(seq)
            continue
        if len(rows) == num_rows:
            break
        rows.append([i])
        room = length - len(seq)
    tokens, segments, positions = pack_rows(sequences, rows, length, num_rows, pad_id)
    placed = sum(len(r) for r in rows)
    return {"tokens": tokens, "segments": segments, "positions": positions}, placed


class CausalLMBatches:
    """Checkpointable batches of `causal_lm_rows`: ``get_state()`` / ``set_state()`` hold the
    index of the first sequence not yet in an emitted batch (as `data.ul2.UL2Batcher`).

    stream_from(index): ``(sequence index, token ids)`` from `index` on, forever
    (`train.ul2.Sequences.from_index`); ids become `lm_sequence`s here.
    """

    def __init__(
        self,
        stream_from: Callable[[int], Iterator[tuple[int, np.ndarray]]],
        batch_size: int,
        length: int,
        *,
        bos_id: int,
        eos_id: int | None,
        pad_id: int = 0,
        pack: bool = False,
    ):
        if batch_size < 1 or length < 2:
            raise ValueError(f"need batch_size >= 1 and length >= 2, got {batch_size}, {length}")
        self.stream_from, self.batch_size, self.length = stream_from, batch_size, length
        self.bos_id, self.eos_id, self.pad_id, self.pack = bos_id, eos_id, pad_id, pack
        self.set_state({"index": 0})

    def get_state(self) -> dict[str, int]:
        return {"index": int(self._next)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._next = int(state["index"])
        self._stream = iter(self.stream_from(self._next))
        self._pending: list[tuple[int, np.ndarray]] = []  # read, not yet emitted

    def __iter__(self):
        return self

    def _full(self) -> bool:
        if not self.pack:
            return len(self._pending) >= self.batch_size
        # More tokens waiting than the rows hold: in-order packing cannot place them all.
        return sum(len(s) for _, s in self._pending) > self.batch_size * self.length

    def __next__(self) -> dict[str, np.ndarray]:
        while not self._full():
            i, ids = next(self._stream)
            self._pending.append((i, lm_sequence(ids, self.length, self.bos_id, self.eos_id)))
        seqs = [s for _, s in self._pending]
        batch, n = causal_lm_rows(
            seqs, self.batch_size, self.length, pack=self.pack, pad_id=self.pad_id
        )
        self._next = self._pending[n][0] if n < len(seqs) else self._pending[-1][0] + 1
        self._pending = self._pending[n:]
        return batch


# -- reading a run (the UL2 stage's init_from) ----------------------------------------------------
def load_causal_lm(path: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """A run directory (or checkpoints / step folder) of this task -> (causal ModelConfig,
    `Transformer` params as float32 numpy). config_overrides: execution fields (dtype, ...)."""
    step_dir, info = checkpoint.load_model_info(path)
    if DECODER_CONFIG not in info:
        raise checkpoint.CheckpointError(
            f"a {info.get('task')!r} run, not a causal_lm run (its model item has no "
            f"{DECODER_CONFIG}): the UL2 stage starts from a decoder-only model",
            where=str(path),
        )
    config = checkpoint._model_config({"model_config": info[DECODER_CONFIG]})
    config = config.replace(**{"bidirectional": False, **config_overrides})
    params = checkpoint.restore_params(step_dir, causal_lm_param_shapes(config))
    return config, jax.tree.map(lambda a: np.asarray(a, np.float32), params)


# -- the stage as a TrainTask ---------------------------------------------------------------------
class CausalLMTask(TextStage):
    """The causal-LM stage (see the module docstring)."""

    name = "causal_lm"

    def __init__(self, config: Any, *, batch_shards: int = 1):
        del batch_shards
        from embeddinggemma_jax.text import Tokenizer
        from embeddinggemma_jax.train.contrastive import check_tokenizer_fits, model_config_from

        self.config = config
        cfg = config.get("causal_lm")
        model_cfg = config.get("model")
        tokenizer_path = text_setting(config, "tokenizer")
        if not tokenizer_path:
            raise ValueError("config.tokenizer: the causal_lm stage needs a tokenizer.model path")
        if text_setting(config, "init_from"):
            raise ValueError("config.init_from: the causal_lm stage trains from random weights")
        self.tokenizer = Tokenizer(tokenizer_path)
        extra = setting(cfg, "extra_rows")
        if extra is None:  # room for the next stage's sentinels and mode ids
            extra = ul2_extra_rows(self.tokenizer, *UL2_LENGTHS)
        self.extra_rows = int(extra)
        if self.extra_rows < 0:
            raise ValueError(f"causal_lm.extra_rows must be >= 0, got {self.extra_rows}")
        rows = self.tokenizer.vocab_size + self.extra_rows
        base = model_config_from(model_cfg, vocab_size=rows)
        self.model_config = base.replace(bidirectional=False)
        check_tokenizer_fits(self.tokenizer, tokenizer_path, self.model_config)
        self.max_length = int(setting(cfg, "max_length", 512))
        self.add_eos = bool(setting(cfg, "add_eos", True))
        self._read_text(config, cfg, "causal_lm")
        self.compute_dtype = self.model_config.dtype
        self._loss_fn = make_causal_lm_loss_fn(
            self.model_config, z_loss=float(setting(cfg, "z_loss", 0.0))
        )

    # -- model ----------------------------------------------------------------------------------
    def param_shapes(self):
        return causal_lm_param_shapes(self.model_config)

    def param_logical_axes(self):
        return causal_lm_logical_axes(self.model_config)

    def initial_params(self, rng, shardings):
        from embeddinggemma_jax.model.init import apply_random_init, random_init_options

        init = functools.partial(_init, self.model_config)
        options = random_init_options(self.config)  # as the contrastive stage's random init

        def params(r):
            return apply_random_init(nn.meta.unbox(init(r)), r, *options)

        return jax.jit(params, out_shardings=shardings)(rng)

    # -- data -----------------------------------------------------------------------------------
    def data_iterator(self, start_step: int = 0):
        it = CausalLMBatches(
            self.sequences.from_index,
            self.global_batch_size,
            self.max_length,
            bos_id=self.tokenizer.bos_id,
            eos_id=self.tokenizer.eos_id if self.add_eos else None,
            pad_id=self.tokenizer.pad_id,
            pack=self.pack,
        )
        return self._resumed(it, start_step)

    def batch_stats(self, host_batch: Mapping[str, Any]) -> dict[str, float]:
        seg = host_batch["segments"]
        lengths = [np.sum(row == s) for row in seg for s in np.unique(row[row > 0])]
        cfg = self.model_config
        _, head = perf.matmul_params(cfg)  # the embedder head's: not part of this model
        forward = perf.forward_flops(cfg, lengths) - 2.0 * head * len(lengths)
        tokens = float(np.sum(seg > 0))
        forward += 2.0 * cfg.embed_dim * cfg.vocab_size * tokens  # tied logits
        return {"tokens": tokens, "flops": 3.0 * forward}

    # -- export ---------------------------------------------------------------------------------
    def export_info(self) -> dict[str, Any]:
        return {
            "task": self.name,
            DECODER_CONFIG: dataclasses.asdict(self.model_config),
            "tokenizer": checkpoint.tokenizer_info(self.tokenizer.path),
            "causal_lm": {
                "max_length": self.max_length,
                "tokenizer_pieces": self.tokenizer.vocab_size,
                "extra_rows": self.model_config.vocab_size - self.tokenizer.vocab_size,
            },
        }
