"""The user-facing Embedder: texts in, L2-normalised embeddings out (sentence-transformers habits).

from embeddinggemma_jax import Embedder
m = Embedder.from_pretrained("path/or/hub-id/or/orbax-dir", dtype="bfloat16")
q = m.encode_query(["how do I sort a list?"], dim=256)
d = m.encode_document(["sorted(iterable) returns a new sorted list"], titles=["sorted"])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from embeddinggemma_jax.interop.sentence_transformers import (
    load_sentence_transformer,
    resolve_model_path,
    save_sentence_transformer,
)
from embeddinggemma_jax.model import EmbeddingGemma, ModelConfig, check_dtype, truncate
from embeddinggemma_jax.text.packing import best_fit_decreasing, bucket_lengths, pack_rows
from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS, apply_document_prompts, resolve_prompt
from embeddinggemma_jax.text.tokenizer import Tokenizer, check_texts

PACK_LENGTH = 512  # "auto" packing's row length
PACKED_TOKENS_PER_TEXT = 128  # a packed batch holds about batch_size x this many tokens
# A text filling at least this much of its length bucket keeps a row of its own: packing it would
# save no padding and make its attention span the whole packed row.
NO_PACK_FILL = 0.9


def _check_texts(texts) -> list[str]:
    if not isinstance(texts, (str, bytes)) and not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    check_texts(texts)
    return list(texts)


class Embedder:
    """An EmbeddingGemma model with its tokenizer and prompt table, ready to encode."""

    def __init__(
        self,
        config: ModelConfig,
        params: Mapping,
        tokenizer: Tokenizer,
        *,
        prompts: Mapping[str, str] | None = None,
        max_length: int = 2048,
        tokenizer_files: str | Path | None = None,
        pack_length: int | str | None = "auto",
        full_batches: bool = False,
    ):
        """
        Args:
          config: model shape and compute dtype.
          params: {"encoder", "head"} parameters (float32 pytree).
          tokenizer: SentencePiece tokenizer matching the embedding table.
          prompts: prompt table (default: the released checkpoint's).
          max_length: tokens per text including BOS/EOS; longer texts are truncated.
          tokenizer_files: folder (or tokenizer.model) copied by `save_pretrained`.
          pack_length: texts up to this many tokens share rows of this length (sequence packing:
            no padding between texts, same embeddings); longer ones get rows of their own.
            None: one text per row. "auto": 512 on CPU and TPU; off on GPU, where cuDNN
            attention (padding masks only) is the faster path.
          full_batches: every call pads to the full batch (rows) instead of the next power of
            two: one compiled program per length bucket instead of several. For scoring many
            small models, where compiling costs more than the padded rows (the recipe report).
        """
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if pack_length == "auto":
            pack_length = PACK_LENGTH if jax.default_backend() in ("cpu", "tpu") else None
        if pack_length is not None and (not isinstance(pack_length, int) or pack_length < 2):
            raise ValueError(
                f"pack_length must be an int >= 2, None or 'auto', got {pack_length!r}"
            )
        self.config = config
        self.params = jax.device_put(params)
        self.tokenizer = tokenizer
        self.prompts = dict(DEFAULT_PROMPTS if prompts is None else prompts)
        self.max_length = max_length
        self.tokenizer_files = tokenizer_files if tokenizer_files is not None else tokenizer.path
        self.pack_length = None if pack_length is None else min(pack_length, max_length)
        self.full_batches = full_batches
        model = EmbeddingGemma(config)
        self._forward = jax.jit(lambda p, t, m: model.apply({"params": p}, t, m))
        self._forward_packed = jax.jit(
            lambda p, t, s, pos, n: model.apply(
                {"params": p}, t, segments_bt=s, positions_bt=pos, num_segments=n
            ),
            static_argnums=4,
        )

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        dtype: str = "float32",
        max_length: int = 2048,
        attention_impl: str = "auto",
        pack_length: int | str | None = "auto",
        scan_layers: bool = True,
        quant: str | None = None,
    ) -> Embedder:
        """Loads a sentence-transformers / Hugging Face folder, a hub id, or an Orbax checkpoint
        directory written by training (a step directory, or the workdir: latest step).
        `pack_length`: see `Embedder`; `scan_layers`: `ModelConfig.scan_layers` (on by default
        here: the same embeddings, half the compile time per batch shape); `quant`: a
        `quant.SCHEMES` name ("q8_0", "q4_0", "mixed"): the weights are fake-quantized as the
        exports of that scheme store them (`ModelConfig.quant`)."""
        from embeddinggemma_jax import checkpoint

        dtype = check_dtype(dtype)
        overrides = dict(
            dtype=dtype, attention_impl=attention_impl, scan_layers=scan_layers, quant=quant
        )
        if checkpoint.is_run_path(path_or_id):  # run, checkpoints or step folder, or gs:// URL
            config, params, tokenizer_file, prompts = checkpoint.load_for_inference(path_or_id)
            config = dataclasses.replace(config, **overrides)
            return cls(
                config,
                params,
                Tokenizer(tokenizer_file),
                prompts=prompts,
                max_length=min(max_length, config.max_length),
                pack_length=pack_length,
            )
        path = resolve_model_path(path_or_id)
        config, params, info = load_sentence_transformer(path, **overrides)
        if info.tokenizer_file is None:
            raise FileNotFoundError(f"{path}: no tokenizer.model (SentencePiece) in the folder")
        if info.max_seq_length:
            max_length = min(max_length, info.max_seq_length)
        return cls(
            config,
            params,
            Tokenizer(info.tokenizer_file),
            prompts=info.prompts,
            max_length=max_length,
            tokenizer_files=path,
            pack_length=pack_length,
        )

    def save_pretrained(self, path: str | Path) -> Path:
        """Writes a sentence-transformers folder (loadable by SentenceTransformer(path)); a
        quantized Embedder writes its dequantized weights (what it computes with)."""
        params = jax.device_get(self.params)
        if self.config.quant is not None:
            from embeddinggemma_jax.quant.params import quantized_params

            params = quantized_params(params, self.config, self.config.quant)
        return save_sentence_transformer(
            path,
            params,
            dataclasses.replace(self.config, dtype="float32", quant=None),
            prompts=self.prompts,
            max_seq_length=self.max_length,
            tokenizer_source=self.tokenizer_files,
        )

    # -- encoding ------------------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embeds texts with an optional prompt (by name from `prompts`, or literal).

        Returns: [N, dim] float32, L2-normalised ([dim] for a single str).
        """
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        prefix = resolve_prompt(self.prompts, prompt_name=prompt_name, prompt=prompt)
        out = self._embed([prefix + t for t in texts], dim, batch_size, show_progress)
        return out[0] if single else out

    def encode_query(self, texts: str | Sequence[str], dim: int | None = None, **kw) -> np.ndarray:
        return self.encode(texts, prompt_name="query", dim=dim, **kw)

    def encode_document(
        self,
        texts: str | Sequence[str],
        titles: Sequence[str | None] | None = None,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Documents with the `title: {title} | text: ` prompt ("none" without a title)."""
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        if single and isinstance(titles, str):
            titles = [titles]
        prompted = apply_document_prompts(texts, titles)
        out = self._embed(prompted, dim, batch_size, show_progress)
        return out[0] if single else out

    def _embed(
        self, texts: list[str], dim: int | None, batch_size: int, show_progress: bool
    ) -> np.ndarray:
        if dim is not None and not 0 < dim <= self.config.output_dim:
            raise ValueError(f"dim must be in 1..{self.config.output_dim}, got {dim}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(texts), dim or self.config.output_dim), np.float32)
        if not texts:
            return out
        ids = self.tokenizer.encode(texts, max_length=self.max_length)
        pending = []  # keep a couple of batches in flight: host work overlaps device work
        bar = tqdm(total=len(texts), disable=not show_progress, desc="encode", unit="text")
        for slots, embeddings in self._device_calls(ids, batch_size):
            pending.append((slots, embeddings))
            if len(pending) > 2:
                self._collect(out, *pending.pop(0), dim, bar)
        for item in pending:
            self._collect(out, *item, dim, bar)
        bar.close()
        return out

    def _device_calls(self, ids: list[list[int]], batch_size: int):
        """Dispatches the forward passes; yields (text index per output slot, -1 for none; the
        embeddings, still on device). With packing, texts up to `pack_length` tokens go into
        packed rows (one text alone when it nearly fills its length bucket: packing would save
        no padding and stretch its attention over the whole row); longer texts (all, without
        packing) get one row each, grouped by length bucket."""
        lengths = [len(x) for x in ids]
        single = list(range(len(ids)))
        if self.pack_length is not None:
            buckets = np.asarray(bucket_lengths(self.max_length))
            n = np.asarray(lengths)
            fits = n <= self.pack_length
            alone = fits & (n >= NO_PACK_FILL * buckets[np.searchsorted(buckets, n)])
            shared = [i for i in single if fits[i] and not alone[i]]
            rows = [
                [shared[k] for k in row]
                for row in best_fit_decreasing([lengths[i] for i in shared], self.pack_length)
            ]
            rows += [[i] for i in single if alone[i]]
            single = [i for i in single if not fits[i]]
            yield from self._packed_calls(ids, lengths, rows, batch_size)
        for length, rows in self._batches([lengths[i] for i in single], batch_size):
            members = [single[r] for r in rows]
            num_rows = self._row_count(len(members), batch_size)
            tokens, mask = self.tokenizer.pad([ids[i] for i in members], length)
            tokens = np.pad(tokens, [(0, num_rows - len(members)), (0, 0)])
            mask = np.pad(mask, [(0, num_rows - len(members)), (0, 0)])
            slots = np.full(num_rows, -1)
            slots[: len(members)] = members
            yield slots, self._forward(self.params, jnp.asarray(tokens), jnp.asarray(mask))

    def _packed_calls(self, ids, lengths, rows, batch_size):
        """Packed rows grouped by the length bucket of their fill; a call holds about
        batch_size x PACKED_TOKENS_PER_TEXT tokens."""
        buckets = bucket_lengths(self.pack_length)
        by_bucket: dict[int, list[list[int]]] = {}
        for row in rows:
            fill = sum(lengths[i] for i in row)
            by_bucket.setdefault(buckets[np.searchsorted(buckets, fill)], []).append(row)
        for length, group in sorted(by_bucket.items(), reverse=True):
            per_call = max(1, batch_size * PACKED_TOKENS_PER_TEXT // length)
            for start in range(0, len(group), per_call):
                chunk = group[start : start + per_call]
                num_rows = self._row_count(len(chunk), per_call)
                num_segments = 1 << math.ceil(math.log2(max(len(r) for r in chunk)))
                arrays = pack_rows(ids, chunk, length, num_rows, self.tokenizer.pad_id)
                slots = np.full((num_rows, num_segments), -1)
                for r, row in enumerate(chunk):
                    slots[r, : len(row)] = row
                emb = self._forward_packed(self.params, *map(jnp.asarray, arrays), num_segments)
                yield slots.reshape(-1), emb

    def _batches(self, lengths: Sequence[int], batch_size: int):
        """(padded length, row indices) per batch: rows sorted longest first, grouped by length
        bucket so no row is padded beyond its own bucket, then cut into batch_size rows."""
        buckets = bucket_lengths(self.max_length)
        bucket_of = np.searchsorted(buckets, lengths)
        order = np.lexsort((-np.asarray(lengths), -bucket_of))
        for b in np.unique(bucket_of)[::-1]:
            rows = order[bucket_of[order] == b]
            for start in range(0, len(rows), batch_size):
                yield buckets[b], rows[start : start + batch_size]

    def _row_count(self, rows: int, most: int) -> int:
        """Rows of a call: `most` with full_batches, else the next power of two (at most
        `most`), so a short last batch does not recompile per size."""
        return most if self.full_batches else min(most, 1 << math.ceil(math.log2(rows)))

    @staticmethod
    def _collect(out, slots, emb, dim, bar) -> None:
        emb = np.asarray(emb).reshape(len(slots), -1)
        used = slots >= 0
        emb = emb[used]
        out[slots[used]] = emb if dim is None else np.asarray(truncate(emb, dim))
        bar.update(int(used.sum()))
