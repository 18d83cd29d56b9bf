"""Contrastive training data: records, sources, the Grain pipeline, mixtures, the stdlib dataset.

Record format (one JSON object per JSONL line / Parquet row / ArrayRecord entry / TFDS example)::

    {"query": str, "positive": str,
     "negatives": [str, ...],                       # optional hard negatives
     "title": str,                                  # optional title of the positive document
     "task": str,                                   # optional query prompt name (else dataset's task)
     "query_id": str | int, "positive_id": str | int,   # optional identities (else the texts)
     "teacher": {"query": [E floats], "positive": [E floats],
                 "negatives": [[E floats], ...]}}   # optional precomputed teacher embeddings

Bad data raises `DataError` naming file, line/row and field (``"train.jsonl line 7: field
'negatives[1]': is empty"``); a missing or empty dataset raises when the pipeline is opened.

Usage (the trainer)::

    from embeddinggemma_jax.data import DataConfig, DataPipeline, batch_sharding, place_batch
    from embeddinggemma_jax.text import Tokenizer

    cfg = DataConfig.from_mapping(config.data)           # ml_collections ConfigDict or dict
    pipeline = DataPipeline(cfg, Tokenizer(path))        # opens + validates every dataset
    it = pipeline.iterator()                             # grain.DatasetIterator over host batches
    it.set_state(saved_state)                            # optional: resume (exact next batch)
    sharding = batch_sharding(mesh, ("data", "fsdp"))
    for host_batch in it:
        batch = place_batch(host_batch, sharding)        # global jax.Arrays, dim 0 over the mesh
        ...
        state_to_save = it.get_state()                   # JSON-able; or grain.checkpoint.CheckpointSave(it)

Host batch (B = global_batch_size / process_count rows on this process; M = num_negatives of the
step's dataset; Tq/Td = bucket lengths of the step; E = teacher embedding dim)::

    {"query":     {"tokens": [B, Tq] int32, "mask": [B, Tq] bool},
     "positive":  {"tokens": [B, Td] int32, "mask": [B, Td] bool},
     "negatives": {"tokens": [B, M, Td] int32, "mask": [B, M, Td] bool},    # only when M > 0
     "query_ids":    [B] int32,     # stable 32-bit hash of query_id or query text (equal = same query)
     "positive_ids": [B] int32,     # stable 32-bit hash of positive_id or positive text
     "teacher": {"query": [B, E] float32, "positive": [B, E] float32,
                 "negatives": [B, M, E] float32},                            # teacher datasets only
     "dataset": int}                # index into config.datasets of the dataset this step came from

Tokens carry the prompts (query: ``prompts[record task or dataset task]``; documents:
``document_prompt(title)``, negatives without title), BOS first and EOS last, right-padded with
pad id 0 (mask False there). Each global batch comes from one dataset, chosen from (seed, step) by
the weights (`mixtures.Mixture`). ``place_batch`` leaves the ``"dataset"`` int as it is.

`stdlib` builds the quickstart code-search dataset (``python -m embeddinggemma_jax.data.stdlib``).
"""

from embeddinggemma_jax.data.mixtures import Mixture
from embeddinggemma_jax.data.pipeline import (
    BatchBuilder,
    DataConfig,
    DataIterator,
    DataPipeline,
    DatasetConfig,
    batch_sharding,
    bucket_lengths,
    identity_hash,
    place_batch,
)
from embeddinggemma_jax.data.records import DataError, Record, TeacherEmbeddings, parse_record
from embeddinggemma_jax.data.sources import (
    ArrayRecordSource,
    JsonlSource,
    ParquetSource,
    RecordSource,
    TfdsSource,
    open_source,
    write_array_record,
)

__all__ = [
    "ArrayRecordSource",
    "BatchBuilder",
    "DataConfig",
    "DataError",
    "DataIterator",
    "DataPipeline",
    "DatasetConfig",
    "JsonlSource",
    "Mixture",
    "ParquetSource",
    "Record",
    "RecordSource",
    "TeacherEmbeddings",
    "TfdsSource",
    "batch_sharding",
    "bucket_lengths",
    "identity_hash",
    "open_source",
    "parse_record",
    "place_batch",
    "write_array_record",
]
