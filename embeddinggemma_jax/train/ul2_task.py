"""The UL2 adaptation stage as a `TrainTask` for the generic `Trainer` (configs/ul2_adaptation.py).

Model: the T5Gemma encoder-decoder (`model.encoder_decoder`), initialised from ``config.init_from``:

- ``""``: random weights, both stacks of ``config.model``'s shape (preset + shape fields);
- a Hugging Face Gemma 3 folder (Gemma3ForCausalLM / Gemma3ForConditionalGeneration) or a Gemma 3
  ``.gguf`` file: T5Gemma's balanced init (encoder and decoder from the decoder-only weights,
  cross-attention from self-attention); ``config.ul2.decoder_from`` names a second, smaller
  decoder-only model for the unbalanced setting (cross-attention from scratch).

Data: JSONL files (``config.train_data``, a path or glob) of JSON objects; every non-empty string
under one of ``config.ul2.text_fields`` is one sequence. Sequences are tokenized without BOS/EOS,
corrupted by `data.ul2` (deterministic per (``config.ul2.seed``, sequence index)) and padded into
batches of ``config.data.global_batch_size`` rows (``config.ul2.pack``: packed instead). Files are
read in order, epoch after epoch; the iterator's state is the index of the next sequence.

Special tokens: sentinels are the tokenizer's ``<unused0>``, ``<unused1>``, ... (as many as the
lengths need), the three mode tokens the next unused pieces; a tokenizer without them gets the
last ids of the vocabulary instead (they then must not occur in the text).

Objective: `train.ul2.make_ul2_loss_fn` (cross-entropy on decoder targets, optional z-loss).
Unbalanced warm-up: `wrap_optimizer` (training only cross-attention for
``config.ul2.cross_attention_warmup_steps`` steps) for trainers that call it.
Hand-off: `train.ul2.extract_encoder(workdir, embedder_config)` / `export_embedder_init`.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from embeddinggemma_jax.data.ul2 import UL2Config, corrupt, default_denoisers, pack_batch, pad_batch
from embeddinggemma_jax.model.config import EXECUTION_FIELDS
from embeddinggemma_jax.model.encoder_decoder import (
    EncoderDecoderConfig,
    encoder_decoder_logical_axes,
    encoder_decoder_param_shapes,
    init_encoder_decoder_params,
)
from embeddinggemma_jax.train.step import TrainTask
from embeddinggemma_jax.train.ul2 import (
    init_ul2_params,
    load_decoder_only,
    make_ul2_loss_fn,
    with_cross_attention_warmup,
)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


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
    enc, dec = int(_get(cfg, "encoder_max_length", 512)), int(_get(cfg, "decoder_max_length", 512))
    s_fraction = float(_get(cfg, "s_fraction", 0.2))
    base = dict(
        decoder_start_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        denoisers=default_denoisers(s_fraction),
        encoder_max_length=enc,
        decoder_max_length=dec,
        seed=int(_get(cfg, "seed", 0)),
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


class _Sequences:
    """Token sequences from JSONL text files, in order, repeating; state = next index."""

    def __init__(self, pattern: str, fields: tuple[str, ...], tokenizer: Any):
        self.paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not self.paths or not all(Path(p).is_file() for p in self.paths):
            raise FileNotFoundError(f"train_data: no file matches {pattern!r}")
        self.fields, self.tokenizer = fields, tokenizer
        self.count = None

    def _texts(self) -> Iterator[str]:
        for path in self.paths:
            with open(path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{line_no}: not JSON ({e.msg})") from e
                    if not isinstance(obj, Mapping):
                        raise ValueError(f"{path}:{line_no}: a line must be a JSON object")
                    for field in self.fields:
                        text = obj.get(field)
                        if isinstance(text, str) and text.strip():
                            yield text

    def validate(self) -> None:
        n = sum(1 for _ in self._texts())
        if n == 0:
            raise ValueError(
                f"train_data {self.paths}: no non-empty text under fields {list(self.fields)}"
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


class UL2Iterator:
    """Host batches of `data.ul2` for the trainer; checkpointable (`get_state` / `set_state`)."""

    def __init__(
        self, sequences: _Sequences, ul2: UL2Config, batch_size: int, pack: bool, pad_id: int
    ):
        self.sequences, self.ul2 = sequences, ul2
        self.batch_size, self.pack, self.pad_id = batch_size, pack, pad_id
        self.set_state({"index": 0})

    def get_state(self) -> dict[str, Any]:
        return {"index": int(self._next)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._next = int(state["index"])  # first sequence not yet in an emitted batch
        self._stream = self.sequences.from_index(self._next)
        self._pending: list = []  # (index, example) read but not yet emitted (packing)

    def __iter__(self):
        return self

    def _read(self) -> tuple[int, Any]:
        i, ids = next(self._stream)
        return i, corrupt(ids, i, self.ul2)

    def __next__(self) -> dict[str, np.ndarray]:
        enc, dec, rows = self.ul2.encoder_max_length, self.ul2.decoder_max_length, self.batch_size
        if not self.pack:
            read = [self._read() for _ in range(rows)]
            self._next = read[-1][0] + 1
            return pad_batch([e for _, e in read], enc, dec, self.pad_id)
        # Packed: read until the waiting examples overflow a batch; the rest wait for the next.
        while (
            sum(e.encoder_input_ids.size for _, e in self._pending) <= rows * enc
            and sum(e.decoder_target_ids.size for _, e in self._pending) <= rows * dec
        ):
            self._pending.append(self._read())
        batch, n = pack_batch([e for _, e in self._pending], rows, enc, dec, self.pad_id)
        # A resumed iterator re-reads the waiting examples (corruption is deterministic).
        self._next = self._pending[n][0] if n < len(self._pending) else self._pending[-1][0] + 1
        self._pending = self._pending[n:]
        return batch


class UL2Task(TrainTask):
    """The UL2 encoder-decoder stage (see the module docstring)."""

    name = "ul2"

    def __init__(self, config: Any, *, batch_shards: int = 1):
        del batch_shards
        from embeddinggemma_jax.model.config import ModelConfig
        from embeddinggemma_jax.text import Tokenizer
        from embeddinggemma_jax.train.contrastive import model_config_from

        self.config = config
        ul2_cfg = config.get("ul2")
        model_cfg = config.get("model")
        exec_overrides = {k: _get(model_cfg, k) for k in EXECUTION_FIELDS if _get(model_cfg, k)}
        tokenizer_path = str(_get(config, "tokenizer", "") or "")
        if not tokenizer_path:
            raise ValueError("config.tokenizer: the UL2 stage needs a tokenizer.model path")
        self.tokenizer = Tokenizer(tokenizer_path)
        self.init_from = str(_get(config, "init_from", "") or "")
        self.decoder_from = str(_get(ul2_cfg, "decoder_from", "") or "")
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
            raise ValueError(
                f"tokenizer {tokenizer_path} ({self.tokenizer.vocab_size} pieces) with the UL2 "
                f"sentinel and mode ids needs {rows} embedding rows; the model has "
                f"{self.model_config.encoder.vocab_size}"
            )
        self.cross_attention_init = _get(ul2_cfg, "cross_attention_init")
        self.warmup_steps = int(_get(ul2_cfg, "cross_attention_warmup_steps", 0))
        self.global_batch_size = int(_get(config.get("data"), "global_batch_size", 32))
        self.pack = bool(_get(ul2_cfg, "pack", False))
        fields = tuple(_get(ul2_cfg, "text_fields", ("text",)))
        train_data = str(_get(config, "train_data", "") or "")
        if not train_data:
            raise ValueError(
                "config.train_data: the UL2 stage needs JSONL text files (path or glob)"
            )
        self.sequences = _Sequences(train_data, fields, self.tokenizer)
        self.sequences.validate()
        self._loss_fn = make_ul2_loss_fn(
            self.model_config,
            z_loss=float(_get(ul2_cfg, "z_loss", 0.0)),
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

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        """Cross-attention-only warm-up for the first `cross_attention_warmup_steps` steps."""
        if self.warmup_steps <= 0:
            return tx
        return with_cross_attention_warmup(tx, self.param_shapes(), self.warmup_steps)

    # -- data -----------------------------------------------------------------------------------
    def data_iterator(self, start_step: int = 0):
        it = UL2Iterator(
            self.sequences, self.ul2, self.global_batch_size, self.pack, self.tokenizer.pad_id
        )
        if start_step and not self.pack:  # padded batches: a fixed number of sequences per step
            it.set_state({"index": start_step * self.global_batch_size})
        elif start_step:
            for _ in range(start_step):
                next(it)
        return it

    def batch_stats(self, host_batch: Mapping[str, Any]) -> dict[str, float]:
        tokens = float(np.sum(host_batch["encoder_segment_ids"] > 0)) + float(
            np.sum(host_batch["decoder_loss_mask"])
        )
        return {"tokens": tokens, "flops": 0.0}

    # -- objective ------------------------------------------------------------------------------
    def value_and_grad(self, params, batch, rng, frozen):
        del frozen
        return jax.value_and_grad(self._loss_fn, has_aux=True)(params, batch, rng)

    # -- export ---------------------------------------------------------------------------------
    def export_info(self) -> dict[str, Any]:
        from embeddinggemma_jax import checkpoint

        return {
            "task": self.name,
            "encoder_decoder_config": {
                "encoder": dataclasses.asdict(self.model_config.encoder),
                "decoder": dataclasses.asdict(self.model_config.decoder),
            },
            "tokenizer": {
                "file": checkpoint.TOKENIZER,
                "sha256": checkpoint.file_sha256(self.tokenizer.path),
            },
            "ul2": {
                "encoder_max_length": self.ul2.encoder_max_length,
                "decoder_max_length": self.ul2.decoder_max_length,
                "sentinel_ids": list(self.ul2.sentinel_ids),
                "mode_ids": [self.ul2.nlu_id, self.ul2.nlg_id, self.ul2.s2s_id],
                "denoisers": [dataclasses.asdict(d) for d in self.ul2.denoisers],
            },
        }

    def tokenizer_file(self) -> Path:
        return Path(self.tokenizer.path)
