"""The training record schema and its validation.

One record is one JSON object (a JSONL line, a Parquet row, an ArrayRecord entry holding JSON bytes,
or a TFDS example)::

    {
      "query": str,                     # required, non-empty
      "positive": str,                  # required, non-empty: the relevant document
      "negatives": [str, ...],          # optional: hard negative documents
      "title": str,                     # optional: title of the positive document
      "task": str,                      # optional: query prompt name (default: the dataset's `task`)
      "query_id": str | int,            # optional: identity of the query (default: its text)
      "positive_id": str | int,         # optional: identity of the positive (default: its text)
      "teacher": {                      # optional: precomputed teacher embeddings
        "query": [float] * E,
        "positive": [float] * E,
        "negatives": [[float] * E] * M  # optional; one row per entry of "negatives"
      }
    }

`null` is accepted for every optional field (Parquet and TFDS columns have to exist in every row).
Any other key is an error (a misspelt "negative" would otherwise be dropped silently) unless the
dataset is opened with ``ignore_extra_fields=True``.

Every problem raises `DataError`, whose message names the file, the line/row and the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from embeddinggemma_jax.errors import LocatedError

REQUIRED_FIELDS = ("query", "positive")
OPTIONAL_FIELDS = ("negatives", "title", "task", "query_id", "positive_id", "teacher")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
TEACHER_FIELDS = ("query", "positive", "negatives")


# A data problem, located (`where` e.g. ``"train.jsonl line 12"``, `field` the record key): the
# package-wide located error, under the name this API always had.
DataError = LocatedError


@dataclasses.dataclass(frozen=True)
class TeacherEmbeddings:
    """Precomputed teacher embeddings of one record.

    query: [E] float32; positive: [E] float32; negatives: [M, E] float32 or None.
    """

    query: np.ndarray
    positive: np.ndarray
    negatives: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.query.shape[0])


@dataclasses.dataclass(frozen=True)
class Record:
    """A validated training record. `where` locates it in its source for later error messages."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    title: str | None = None
    task: str | None = None
    query_id: str | None = None
    positive_id: str | None = None
    teacher: TeacherEmbeddings | None = None
    where: str = "<memory>"

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict in the documented schema (absent fields left out)."""
        out: dict[str, Any] = {"query": self.query, "positive": self.positive}
        if self.negatives:
            out["negatives"] = list(self.negatives)
        for key in ("title", "task", "query_id", "positive_id"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.teacher is not None:
            out["teacher"] = {
                "query": self.teacher.query.tolist(),
                "positive": self.teacher.positive.tolist(),
            }
            if self.teacher.negatives is not None:
                out["teacher"]["negatives"] = self.teacher.negatives.tolist()
        return out


def _text(value: Any, *, where: str, field: str, required: bool) -> str | None:
    if value is None:
        if required:
            raise DataError("is missing (required)", where=where, field=field)
        return None
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", where=where, field=field)
    if required and not value.strip():
        raise DataError("is empty", where=where, field=field)
    return value


def _identifier(value: Any, *, where: str, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise DataError(
            f"must be a string or an integer, got {type(value).__name__}", where=where, field=field
        )
    return str(value)


def _vector(value: Any, *, where: str, field: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError("must be a non-empty list of numbers", where=where, field=field)
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise DataError(
                f"must be a finite number, got {x!r}", where=where, field=f"{field}[{i}]"
            )
    return np.asarray(value, dtype=np.float32)


def _teacher(value: Any, *, where: str, num_negatives: int) -> TeacherEmbeddings | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise DataError(
            f"must be an object, got {type(value).__name__}", where=where, field="teacher"
        )
    for key in value:
        if key not in TEACHER_FIELDS:
            raise DataError(
                f"unknown key (expected one of {TEACHER_FIELDS})",
                where=where,
                field=f"teacher.{key}",
            )
    for key in ("query", "positive"):
        if value.get(key) is None:
            raise DataError(
                "is missing (required when 'teacher' is given)", where=where, field=f"teacher.{key}"
            )
    query = _vector(value["query"], where=where, field="teacher.query")
    positive = _vector(value["positive"], where=where, field="teacher.positive")
    if positive.shape != query.shape:
        raise DataError(
            f"has dimension {positive.shape[0]} but teacher.query has {query.shape[0]}",
            where=where,
            field="teacher.positive",
        )
    negatives = None
    raw = value.get("negatives")
    if raw is not None:
        if isinstance(raw, np.ndarray):
            raw = list(raw)
        if not isinstance(raw, (list, tuple)):
            raise DataError("must be a list of vectors", where=where, field="teacher.negatives")
        if len(raw) != num_negatives:
            raise DataError(
                f"has {len(raw)} rows but the record has {num_negatives} negatives",
                where=where,
                field="teacher.negatives",
            )
        rows = [_vector(r, where=where, field=f"teacher.negatives[{i}]") for i, r in enumerate(raw)]
        for i, r in enumerate(rows):
            if r.shape != query.shape:
                raise DataError(
                    f"has dimension {r.shape[0]} but teacher.query has {query.shape[0]}",
                    where=where,
                    field=f"teacher.negatives[{i}]",
                )
        negatives = np.stack(rows) if rows else np.zeros((0, query.shape[0]), np.float32)
    return TeacherEmbeddings(query=query, positive=positive, negatives=negatives)


def parse_record(obj: Any, *, where: str, ignore_extra_fields: bool = False) -> Record:
    """Validates one decoded record (a mapping) and returns it as a `Record`.

    Raises:
      DataError naming `where` and the offending field.
    """
    if not isinstance(obj, Mapping):
        raise DataError(f"a record must be a JSON object, got {type(obj).__name__}", where=where)
    if not ignore_extra_fields:
        for key in obj:
            if key not in FIELDS:
                raise DataError(
                    f"unknown field (expected {', '.join(FIELDS)}; open the dataset with "
                    "ignore_extra_fields=True to skip extra columns)",
                    where=where,
                    field=str(key),
                )
    query = _text(obj.get("query"), where=where, field="query", required=True)
    positive = _text(obj.get("positive"), where=where, field="positive", required=True)
    raw_negatives = obj.get("negatives")
    if raw_negatives is None:
        negatives: tuple[str, ...] = ()
    else:
        if isinstance(raw_negatives, np.ndarray):
            raw_negatives = raw_negatives.tolist()
        if not isinstance(raw_negatives, (list, tuple)):
            raise DataError(
                f"must be a list of strings, got {type(raw_negatives).__name__}",
                where=where,
                field="negatives",
            )
        negatives = tuple(
            _text(n, where=where, field=f"negatives[{i}]", required=True)
            for i, n in enumerate(raw_negatives)
        )
    title = _text(obj.get("title"), where=where, field="title", required=False)
    task = _text(obj.get("task"), where=where, field="task", required=False)
    if task is not None and not task:
        raise DataError(
            "is empty (leave it out to use the dataset's task)", where=where, field="task"
        )
    return Record(
        query=query,
        positive=positive,
        negatives=negatives,
        title=title,
        task=task,
        query_id=_identifier(obj.get("query_id"), where=where, field="query_id"),
        positive_id=_identifier(obj.get("positive_id"), where=where, field="positive_id"),
        teacher=_teacher(obj.get("teacher"), where=where, num_negatives=len(negatives)),
        where=where,
    )
