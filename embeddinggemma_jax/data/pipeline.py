"""The Grain input pipeline: records -> prompted, tokenised, bucket-padded host batches -> mesh.

Global stream. Each dataset ``d`` is a Grain ``MapDataset``: its source, shuffled with a seed derived
from ``(seed, d)`` and reshuffled every epoch, repeated forever. Step ``s`` is served by dataset
``d = mixture.choice(s)``; if ``d`` has served ``c`` batches before ``s`` (`Mixture.locate`), the
global batch is elements ``[c * G, (c + 1) * G)`` of that stream (G = global batch size), and
process ``p`` of ``P`` reads rows ``[p * G / P, (p + 1) * G / P)`` of it. So the processes' shares are
disjoint and cover the global batch, and the global batch of a step does not depend on the number of
processes (a run can resume on a different topology).

Everything is a pure function of the step, so the iterator state is the next step (plus a
fingerprint of what determines the stream, checked on restore).

Host batch of one process (B = local batch size, M = num_negatives of the step's dataset):

    {"query":     {"tokens": [B, Tq] int32, "mask": [B, Tq] bool},
     "positive":  {"tokens": [B, Td] int32, "mask": [B, Td] bool},
     "negatives": {"tokens": [B, M, Td] int32, "mask": [B, M, Td] bool},     # only when M > 0
     "query_ids":    [B] int32,   # 32-bit hash of query_id, else of the query text
     "positive_ids": [B] int32,   # 32-bit hash of positive_id, else of the positive text
     "teacher": {"query": [B, E] float32, "positive": [B, E] float32,
                 "negatives": [B, M, E] float32},                          # only for teacher datasets
     "dataset": int}              # index of the step's dataset in config.datasets

Tokens are right-padded with the tokenizer's pad id (mask False there). Tq is the smallest query
bucket that holds the longest query row of the batch; Td likewise for positives and negatives
together (one document role). Buckets default to powers of two from `min_bucket` up to the role's
max length, plus the max length itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import grain
import numpy as np

from embeddinggemma_jax.data.mixtures import Mixture
from embeddinggemma_jax.data.records import DataError, Record
from embeddinggemma_jax.data.sources import FORMATS, RecordSource, open_source
from embeddinggemma_jax.errors import LocatedError, did_you_mean
from embeddinggemma_jax.text.packing import bucket_lengths


class TokenizerLike(Protocol):
    """What the pipeline needs from `embeddinggemma_jax.text.tokenizer.Tokenizer`."""

    pad_id: int

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[np.ndarray]: ...


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One dataset of a mixture.

    Attributes:
      path: local file path or glob (for ``format="tfds"``: the TFDS name).
      weight: mixture weight (> 0); normalised over the datasets.
      name: a label for logs (default: the file name of `path`).
      format: ``"auto"`` or one of ``jsonl``, ``parquet``, ``arrayrecord``, ``tfds``.
      task: prompt name used for queries whose record has no ``"task"``.
      num_negatives: M, hard negatives per row (records need at least M; the first M are used).
      teacher: read precomputed teacher embeddings (every record must have them).
      split, data_dir: TFDS only.
      fields: source column renames, e.g. ``{"query": "anchor"}``.
      ignore_extra_fields: skip unknown keys/columns instead of failing.
    """

    path: str
    weight: float = 1.0
    name: str | None = None
    format: str = "auto"
    task: str = "query"
    num_negatives: int = 0
    teacher: bool = False
    split: str = "train"
    data_dir: str | None = None
    fields: Mapping[str, str] | None = None
    ignore_extra_fields: bool = False

    @property
    def label(self) -> str:
        return self.name or self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The input pipeline's settings (an ml_collections ``config.data`` maps onto it, see `from_mapping`).

    Attributes:
      datasets: the mixture's datasets.
      global_batch_size: rows per step over all processes (divisible by the process count).
      query_max_length / doc_max_length: token limits (prompt, BOS and EOS included) per role.
      buckets: explicit bucket lengths for both roles (each clipped to the role's max, the max added);
        None for powers of two from `min_bucket`.
      min_bucket: smallest power-of-two bucket.
      seed: data seed (shuffles and the mixture).
      shuffle: shuffle each dataset (reshuffled every epoch); False reads in file order.
      prompts: prompt-name -> prefix table for queries; None for the checkpoint's DEFAULT_PROMPTS.
      validate: ``"all"`` reads and checks every record before training; an int checks the first N of
        each dataset; ``"none"`` only checks records as they are read.
      num_threads / prefetch_buffer_size: Grain read threads and batches prefetched.
    """

    datasets: tuple[DatasetConfig, ...]
    global_batch_size: int
    query_max_length: int = 128
    doc_max_length: int = 512
    buckets: tuple[int, ...] | None = None
    min_bucket: int = 16
    seed: int = 0
    shuffle: bool = True
    prompts: Mapping[str, str] | None = None
    validate: str | int = "all"
    num_threads: int = 2
    prefetch_buffer_size: int = 4

    def __post_init__(self):
        if not self.datasets:
            raise LocatedError("data.datasets: at least one dataset is required")
        object.__setattr__(
            self,
            "datasets",
            tuple(
                d if isinstance(d, DatasetConfig) else _dataset_from_mapping(d, i)
                for i, d in enumerate(self.datasets)
            ),
        )
        for i, d in enumerate(self.datasets):
            if d.format not in ("auto", *FORMATS):
                raise LocatedError(
                    f"data.datasets[{i}].format: {d.format!r} is not auto or one of {FORMATS}"
                )
            if d.num_negatives < 0:
                raise LocatedError(f"data.datasets[{i}].num_negatives must be >= 0")
        if self.global_batch_size <= 0:
            raise LocatedError("data.global_batch_size must be positive")
        for key in ("query_max_length", "doc_max_length", "min_bucket"):
            if getattr(self, key) < 3:
                raise LocatedError(f"data.{key} must be >= 3 (BOS, one token, EOS)")
        if self.buckets is not None:
            object.__setattr__(self, "buckets", tuple(int(b) for b in self.buckets))
        if not (
            self.validate in ("all", "none")
            or (isinstance(self.validate, int) and self.validate >= 0)
        ):
            raise LocatedError(
                f"data.validate must be 'all', 'none' or a record count, got {self.validate!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DataConfig:
        """From a dict or ``ml_collections.ConfigDict`` (``config.data``); unknown keys are errors."""
        if hasattr(mapping, "to_dict"):
            mapping = mapping.to_dict()
        mapping = dict(mapping)
        _check_keys(mapping, cls, "data.")
        datasets = mapping.pop("datasets", ())
        return cls(
            datasets=tuple(_dataset_from_mapping(d, i) for i, d in enumerate(datasets)), **mapping
        )


def _check_keys(mapping: Mapping[str, Any], config_class: type, prefix: str) -> None:
    """LocatedError (with a did-you-mean) for a key that is not a field of `config_class`."""
    known = {f.name for f in dataclasses.fields(config_class)}
    for key in mapping:
        if key not in known:
            raise LocatedError(
                f"{prefix}{key}: unknown key{did_you_mean(key, known, prefix=prefix)} "
                f"(expected one of {sorted(known)})"
            )


def _dataset_from_mapping(mapping: Any, index: int) -> DatasetConfig:
    if isinstance(mapping, DatasetConfig):
        return mapping
    if hasattr(mapping, "to_dict"):
        mapping = mapping.to_dict()
    _check_keys(mapping, DatasetConfig, f"data.datasets[{index}].")
    if "path" not in mapping:
        raise LocatedError(f"data.datasets[{index}].path is required")
    return DatasetConfig(**mapping)


# ---------------------------------------------------------------------------------------------
# Batching helpers


def pick_bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= length (buckets sorted; the last one is the role's max length)."""
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"length {length} exceeds the largest bucket {buckets[-1]}")


def pad_rows(rows: Sequence[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads token rows: (tokens [R, length] int32, mask [R, length] bool)."""
    tokens = np.full((len(rows), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(rows), length), dtype=bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = True
    return tokens, mask


def identity_hash(key: str) -> int:
    """A stable 32-bit identity (signed int32 range) of a string, the same on every host and run."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
    return int(np.frombuffer(digest, dtype="<i4")[0])


def query_identity(record: Record) -> int:
    return identity_hash(
        f"id:{record.query_id}" if record.query_id is not None else f"text:{record.query}"
    )


def positive_identity(record: Record) -> int:
    return identity_hash(
        f"id:{record.positive_id}" if record.positive_id is not None else f"text:{record.positive}"
    )


def _default_prompts() -> tuple[Mapping[str, str], Callable[[str | None], str]]:
    from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS, document_prompt

    return DEFAULT_PROMPTS, document_prompt


class BatchBuilder:
    """Turns the records of one step into a host batch (see the module docstring for its structure).

    Args:
      tokenizer: anything with ``encode(texts, max_length) -> list[int32 array]`` and ``pad_id``.
      config: the pipeline config (lengths, buckets, prompts).
      prompts: query prompt table (default: config.prompts or DEFAULT_PROMPTS).
      document_prompt: title -> document prefix (default: `text.prompts.document_prompt`).
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        config: DataConfig,
        *,
        prompts: Mapping[str, str] | None = None,
        document_prompt: Callable[[str | None], str] | None = None,
    ):
        self.tokenizer = tokenizer
        self.config = config
        if prompts is None or document_prompt is None:
            default_prompts, default_document_prompt = _default_prompts()
            prompts = prompts if prompts is not None else (config.prompts or default_prompts)
            document_prompt = document_prompt or default_document_prompt
        self.prompts = dict(prompts)
        self.document_prompt = document_prompt
        self.query_buckets = bucket_lengths(
            config.query_max_length, config.min_bucket, config.buckets
        )
        self.doc_buckets = bucket_lengths(config.doc_max_length, config.min_bucket, config.buckets)
        for i, d in enumerate(config.datasets):
            if d.task not in self.prompts:
                raise LocatedError(
                    f"data.datasets[{i}].task: prompt {d.task!r} is not in the prompt table "
                    f"({', '.join(sorted(self.prompts))})"
                )

    def check(self, record: Record, dataset: DatasetConfig) -> None:
        """Raises DataError if `record` cannot be batched for `dataset` (negatives, teacher, task)."""
        m = dataset.num_negatives
        if len(record.negatives) < m:
            raise DataError(
                f"has {len(record.negatives)} entries but dataset {dataset.label!r} uses num_negatives={m}",
                where=record.where,
                field="negatives",
            )
        if record.task is not None and record.task not in self.prompts:
            raise DataError(
                f"prompt {record.task!r} is not in the prompt table ({', '.join(sorted(self.prompts))})",
                where=record.where,
                field="task",
            )
        if dataset.teacher:
            if record.teacher is None:
                raise DataError(
                    f"is missing but dataset {dataset.label!r} has teacher=True",
                    where=record.where,
                    field="teacher",
                )
            if m > 0 and record.teacher.negatives is None:
                raise DataError(
                    f"is missing but dataset {dataset.label!r} has teacher=True and num_negatives={m}",
                    where=record.where,
                    field="teacher.negatives",
                )

    def query_text(self, record: Record, dataset: DatasetConfig) -> str:
        return self.prompts[record.task or dataset.task] + record.query

    def __call__(
        self, records: Sequence[Record], dataset: DatasetConfig, dataset_index: int
    ) -> dict[str, Any]:
        for r in records:
            self.check(r, dataset)
        cfg, tok, m = self.config, self.tokenizer, dataset.num_negatives
        b = len(records)
        queries = tok.encode(
            [self.query_text(r, dataset) for r in records], max_length=cfg.query_max_length
        )
        docs = [self.document_prompt(r.title) + r.positive for r in records]
        none_prefix = self.document_prompt(None)
        docs += [none_prefix + n for r in records for n in r.negatives[:m]]
        doc_ids = tok.encode(docs, max_length=cfg.doc_max_length)

        tq = pick_bucket(max(len(q) for q in queries), self.query_buckets)
        td = pick_bucket(max(len(d) for d in doc_ids), self.doc_buckets)
        q_tokens, q_mask = pad_rows(queries, tq, tok.pad_id)
        d_tokens, d_mask = pad_rows(doc_ids, td, tok.pad_id)
        batch: dict[str, Any] = {
            "query": {"tokens": q_tokens, "mask": q_mask},
            "positive": {"tokens": d_tokens[:b], "mask": d_mask[:b]},
        }
        if m > 0:
            batch["negatives"] = {
                "tokens": d_tokens[b:].reshape(b, m, td),
                "mask": d_mask[b:].reshape(b, m, td),
            }
        batch["query_ids"] = np.array([query_identity(r) for r in records], dtype=np.int32)
        batch["positive_ids"] = np.array([positive_identity(r) for r in records], dtype=np.int32)
        if dataset.teacher:
            batch["teacher"] = self._teacher(records, m)
        batch["dataset"] = int(dataset_index)
        return batch

    @staticmethod
    def _teacher(records: Sequence[Record], m: int) -> dict[str, np.ndarray]:
        dim = records[0].teacher.dim
        for r in records:
            if r.teacher.dim != dim:
                raise DataError(
                    f"has dimension {r.teacher.dim}, other rows of the batch have {dim}",
                    where=r.where,
                    field="teacher.query",
                )
        out = {
            "query": np.stack([r.teacher.query for r in records]),
            "positive": np.stack([r.teacher.positive for r in records]),
        }
        if m > 0:
            out["negatives"] = np.stack([r.teacher.negatives[:m] for r in records])
        return out


# ---------------------------------------------------------------------------------------------
# The pipeline


def _process_index_and_count(
    process_index: int | None, process_count: int | None
) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return process_index, process_count


def _derive_seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")  # [0, 2**32), what Grain's shuffle accepts


class DataPipeline:
    """Opens and validates the datasets, then serves host batches by step.

    Opening raises before any training: a missing or empty dataset, a malformed record (with
    ``validate="all"``), or a record that cannot be batched (too few negatives, missing teacher).

    Args:
      config: `DataConfig`.
      tokenizer: `embeddinggemma_jax.text.tokenizer.Tokenizer` (or anything `TokenizerLike`).
      process_index / process_count: default ``jax.process_index()`` / ``jax.process_count()``.
      prompts / document_prompt: override the prompt table / the document prefix function.
    """

    def __init__(
        self,
        config: DataConfig,
        tokenizer: TokenizerLike,
        *,
        process_index: int | None = None,
        process_count: int | None = None,
        prompts: Mapping[str, str] | None = None,
        document_prompt: Callable[[str | None], str] | None = None,
    ):
        self.config = config
        self.process_index, self.process_count = _process_index_and_count(
            process_index, process_count
        )
        if config.global_batch_size % self.process_count:
            raise LocatedError(
                f"data.global_batch_size={config.global_batch_size} is not divisible by the "
                f"{self.process_count} processes"
            )
        self.local_batch_size = config.global_batch_size // self.process_count
        self.builder = BatchBuilder(
            tokenizer, config, prompts=prompts, document_prompt=document_prompt
        )
        self.sources: list[RecordSource] = []
        for d in config.datasets:
            try:
                source = open_source(
                    d.path,
                    d.format,
                    split=d.split,
                    data_dir=d.data_dir,
                    fields=d.fields,
                    ignore_extra_fields=d.ignore_extra_fields,
                )
            except DataError as e:
                raise DataError(f"dataset {d.label!r}: {e}") from e
            self.sources.append(source)
        self._validate()
        self.mixture = Mixture([d.weight for d in config.datasets], config.seed)
        self.streams: list[grain.MapDataset] = []
        for i, source in enumerate(self.sources):
            ds = grain.MapDataset.source(source)
            if config.shuffle:
                ds = ds.shuffle(seed=_derive_seed(config.seed, i))
            self.streams.append(ds.repeat())

    def _validate(self) -> None:
        mode = self.config.validate
        if mode == "none":
            return
        teacher_dim: tuple[int, str] | None = None
        for d, source in zip(self.config.datasets, self.sources):
            n = len(source) if mode == "all" else min(len(source), int(mode))
            for i in range(n):
                record = source[i]
                self.builder.check(record, d)
                if d.teacher:
                    if teacher_dim is None:
                        teacher_dim = (record.teacher.dim, record.where)
                    elif record.teacher.dim != teacher_dim[0]:
                        raise DataError(
                            f"has dimension {record.teacher.dim} but {teacher_dim[1]} has {teacher_dim[0]}",
                            where=record.where,
                            field="teacher.query",
                        )

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What determines the global batch sequence; stored in and checked against iterator states."""
        cfg = self.config
        return {
            "seed": cfg.seed,
            "shuffle": cfg.shuffle,
            "global_batch_size": cfg.global_batch_size,
            "query_max_length": cfg.query_max_length,
            "doc_max_length": cfg.doc_max_length,
            "datasets": [
                {
                    # The label, not the path: data moved to another mount must still resume.
                    "name": d.label,
                    "records": len(s),
                    "weight": d.weight,
                    "num_negatives": d.num_negatives,
                }
                for d, s in zip(cfg.datasets, self.sources)
            ],
        }

    def records(self, step: int) -> tuple[int, list[Record]]:
        """(dataset index, this process's records) of a step."""
        dataset, cursor = self.mixture.locate(step)
        g, b = self.config.global_batch_size, self.local_batch_size
        start = cursor * g + self.process_index * b
        stream = self.streams[dataset]
        return dataset, [stream[start + j] for j in range(b)]

    def batch(self, step: int) -> dict[str, Any]:
        """The host batch of a step (random access; see the module docstring)."""
        dataset, records = self.records(step)
        return self.builder(records, self.config.datasets[dataset], dataset)

    def as_map_dataset(self, num_steps: int | None = None) -> grain.MapDataset:
        """A Grain MapDataset whose element `s` is the host batch of step `s` (endless by default)."""
        return grain.MapDataset.range(0, sys.maxsize if num_steps is None else num_steps).map(
            self.batch
        )

    def iterator(self, start_step: int = 0, num_steps: int | None = None) -> DataIterator:
        """A checkpointable, prefetching iterator over host batches from `start_step`."""
        it = DataIterator(self, num_steps=num_steps)
        if start_step:
            it.set_state({"step": start_step, "fingerprint": self.fingerprint})
        return it


class DataIterator(grain.DatasetIterator):
    """Iterator over host batches with Grain prefetching and exact resume.

    ``get_state()`` is ``{"step": next step, "fingerprint": {...}}`` (JSON-able); ``set_state`` of a
    state from another iterator over the same data continues with exactly the batch that iterator
    would have produced next, and raises if the fingerprints differ. Being a Grain
    ``DatasetIterator``, it also works with ``grain.checkpoint.CheckpointSave/CheckpointRestore``
    in an Orbax ``CheckpointManager``.
    """

    def __init__(self, pipeline: DataPipeline, num_steps: int | None = None):
        cfg = pipeline.config
        options = grain.ReadOptions(
            num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch_buffer_size
        )
        parent = pipeline.as_map_dataset(num_steps).to_iter_dataset(options).__iter__()
        super().__init__(parent)
        self.pipeline = pipeline

    @property
    def step(self) -> int:
        """The step whose batch `next()` returns."""
        return int(self._parent.get_state()["next_index"])

    def __next__(self) -> dict[str, Any]:
        return next(self._parent)

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step, "fingerprint": self.pipeline.fingerprint}

    def set_state(self, state: Mapping[str, Any]) -> None:
        expected = self.pipeline.fingerprint
        # Through JSON so tuples/lists and int/float spellings compare equal.
        got = json.loads(json.dumps(state.get("fingerprint")))
        if got != json.loads(json.dumps(expected)):
            raise ValueError(
                "the data-iterator state was saved for a different data pipeline:\n"
                f"  saved:   {json.dumps(got, sort_keys=True)}\n  current: {json.dumps(expected, sort_keys=True)}"
            )
        self._parent.set_state({"next_index": int(state["step"])})

    def __str__(self) -> str:
        return f"DataIterator(step={self.step})"


# ---------------------------------------------------------------------------------------------
# Placement onto the mesh


def batch_sharding(mesh, batch_axes: Sequence[str] | str = ("data", "fsdp")):
    """NamedSharding splitting dim 0 (the batch) over `batch_axes`, other dims replicated."""
    from jax.sharding import NamedSharding, PartitionSpec

    axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)
    for a in axes:
        if a not in mesh.axis_names:
            raise ValueError(f"batch axis {a!r} is not a mesh axis {tuple(mesh.axis_names)}")
    return NamedSharding(mesh, PartitionSpec(axes if len(axes) != 1 else axes[0]))


def _pad_last_axis(x: np.ndarray, length: int, value) -> np.ndarray:
    if x.shape[-1] == length:
        return x
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])]
    return np.pad(x, pad, constant_values=value)


def agree_lengths(batch: dict[str, Any], pad_id: int = 0) -> dict[str, Any]:
    """Pads every process's batch to the largest Tq / Td over processes (a tiny collective).

    Buckets are chosen per process, but a global array needs one shape; with a single process this
    returns `batch` unchanged. Every process must call it for every step, in the same order.
    """
    import jax

    if jax.process_count() == 1:
        return batch
    from jax.experimental import multihost_utils

    lengths = np.array(
        [batch["query"]["tokens"].shape[-1], batch["positive"]["tokens"].shape[-1]], np.int32
    )
    tq, td = np.max(multihost_utils.process_allgather(lengths), axis=0).tolist()
    out = dict(batch)
    for role, length in (("query", tq), ("positive", td), ("negatives", td)):
        if role in batch:
            out[role] = {
                "tokens": _pad_last_axis(batch[role]["tokens"], length, pad_id),
                "mask": _pad_last_axis(batch[role]["mask"], length, False),
            }
    return out


def place_batch(batch: dict[str, Any], sharding, pad_id: int = 0) -> dict[str, Any]:
    """Host batch -> global ``jax.Array`` batch via ``jax.make_array_from_process_local_data``.

    Each process passes its own host batch ([B_local, ...] arrays); the result has leading dim
    ``B_local * process_count`` sharded by `sharding` (see `batch_sharding`). Non-array entries
    (``"dataset"``) are passed through unchanged.
    """
    import jax

    batch = agree_lengths(batch, pad_id)
    process_count = jax.process_count()

    def put(x):
        if not isinstance(x, np.ndarray):
            return x
        global_shape = (x.shape[0] * process_count, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, batch)
