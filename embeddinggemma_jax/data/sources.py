"""Random-access record sources: JSONL (plain or gzip), Parquet, ArrayRecord and TFDS.

Every source is a Grain ``RandomAccessDataSource`` (``__len__`` and ``__getitem__``), so Grain can
shuffle it globally and an iterator position is just an index. ``source[i]`` returns a validated
`records.Record`; a malformed record raises `records.DataError` naming file, line/row and field.

One dataset is one local path or glob (`open_source`); the files a glob matches are read in sorted
order and concatenated. Formats, chosen from the file name unless given:

=============  ==============================  ==================================================
format         file names                      notes
=============  ==============================  ==================================================
``jsonl``      ``*.jsonl``, ``*.jsonl.gz``,     one JSON object per line; line offsets are indexed
               ``*.json.gz``, ``*.ndjson``     once. A gzip file is decompressed into memory once
                                               (use plain JSONL or ArrayRecord for big data).
``parquet``    ``*.parquet``                   one record per row; a file's table is read once and
                                               kept in memory (Arrow buffers).
``arrayrecord`` ``*.array_record``,             one record per entry, each the JSON object's UTF-8
               ``*.arrayrecord``               bytes (`write_array_record` writes such files).
``tfds``       a TFDS name, e.g.               ``tfds.data_source(name, split=..., data_dir=...)``;
               ``"my_pairs/default:1.0.0"``    needs the optional tensorflow_datasets package.
=============  ==============================  ==================================================

Sources hold no open file handles when pickled, so they can be handed to Grain worker processes.
"""

from __future__ import annotations

import bisect
import glob
import json
import mmap
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from embeddinggemma_jax import readers
from embeddinggemma_jax.data.records import DataError, Record, parse_record

FORMATS = ("jsonl", "parquet", "arrayrecord", "tfds")
_SUFFIXES = {
    **{k: v for k, v in readers.SUFFIXES.items() if v in FORMATS},
    ".array_record": "arrayrecord",
    ".arrayrecord": "arrayrecord",
}


def detect_format(path: str) -> str:
    """The format implied by a file name (see the module docstring)."""
    try:
        return readers.detect_format(path, _SUFFIXES)
    except DataError as e:
        # A glob like "shard-*-of-8.array_record-*" or a directory: no suffix to go on.
        raise DataError(f"{e.reason}; give format= explicitly", where=e.where) from None


class RecordSource:
    """Base class: subclasses implement `_raw(i) -> (mapping, where)` and `__len__`."""

    description: str = ""

    def __init__(
        self, *, fields: Mapping[str, str] | None = None, ignore_extra_fields: bool = False
    ):
        # fields maps record field -> source column, e.g. {"query": "anchor"}.
        self._fields = dict(fields or {})
        self._ignore_extra = ignore_extra_fields

    def __len__(self) -> int:
        raise NotImplementedError

    def _raw(self, index: int) -> tuple[Any, str]:
        raise NotImplementedError

    def _rename(self, obj: Any) -> Any:
        if not self._fields or not isinstance(obj, Mapping):
            return obj
        taken = set(self._fields.values())
        out = {k: v for k, v in obj.items() if k not in taken}
        for field, column in self._fields.items():
            if column in obj:
                out[field] = obj[column]
        return out

    def __getitem__(self, index: int) -> Record:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"record {index} out of range for {self.description} ({n} records)")
        obj, where = self._raw(int(index))
        return parse_record(self._rename(obj), where=where, ignore_extra_fields=self._ignore_extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, {len(self)} records)"


class _MultiFileSource(RecordSource):
    """Concatenation of one `_part` per file (each with `__len__` and `raw(i) -> (obj, where)`)."""

    _part: Callable[[str], Any]

    def __init__(self, paths: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self._parts = [type(self)._part(p) for p in paths]
        self._starts = np.cumsum([0] + [len(p) for p in self._parts]).tolist()
        self.description = ", ".join(paths)

    def __len__(self) -> int:
        return self._starts[-1]

    def _raw(self, index: int) -> tuple[Any, str]:
        part = bisect.bisect_right(self._starts, index) - 1
        return self._parts[part].raw(index - self._starts[part])


class _FilePart:
    """A file of a source, picklable for Grain's worker processes: the attributes in `_unpickled`
    (open handles, loaded tables) are dropped and reopened lazily; the lock is made anew."""

    _unpickled: tuple[str, ...] = ()

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in (*self._unpickled, "_lock"):
            state[key] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# JSONL

_WHITESPACE = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)  # what bytes.strip() strips


def _line_spans(data: bytes | mmap.mmap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, line_numbers) of the non-blank lines of `data`; line numbers are 1-based.

    A leading byte-order mark is not part of line 1; a line of ASCII whitespace only is blank
    (the rules of `readers.read_jsonl`).
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    ends = np.concatenate([newlines, [len(buf)]]).astype(np.int64)
    if bytes(buf[: len(readers.BOM)]) == readers.BOM:
        starts[0] = min(len(readers.BOM), ends[0])
    # A "\r" before the "\n" is the line end's, not the line's.
    crlf = ends > starts
    crlf[crlf] = buf[ends[crlf] - 1] == ord("\r")
    ends = ends - crlf
    numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    keep = ends > starts
    # Only a line that starts with whitespace can be blank; check just those in Python.
    maybe_blank = keep.copy()
    maybe_blank[keep] = np.isin(buf[starts[keep]], _WHITESPACE)
    for i in np.flatnonzero(maybe_blank):
        if not bytes(data[starts[i] : ends[i]]).strip():
            keep[i] = False
    return starts[keep], ends[keep], numbers[keep]


class _JsonlFile(_FilePart):
    _unpickled = ("_fd",)

    def __init__(self, path: str):
        self.path = path
        try:
            with readers.open_bytes(path) as f:
                if path.endswith(".gz"):
                    data = f.read()
                    self._starts, self._ends, self._lines = _line_spans(data)
                else:
                    data = None  # indexed through a memory map, then re-read with pread on demand
                    if os.fstat(f.fileno()).st_size == 0:
                        self._starts, self._ends, self._lines = _line_spans(b"")
                    else:
                        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                            self._starts, self._ends, self._lines = _line_spans(mm)
        except readers.GZIP_ERRORS as e:
            raise DataError(f"cannot read: {e}", where=path) from e
        self._data = data
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._starts)

    def _bytes(self, i: int) -> bytes:
        start, end = int(self._starts[i]), int(self._ends[i])
        if self._data is not None:
            return self._data[start:end]
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, end - start, start)

    def raw(self, i: int) -> tuple[Any, str]:
        where = f"{self.path} line {int(self._lines[i])}"
        return readers.decode_json(self._bytes(i), where, objects=False), where

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


class JsonlSource(_MultiFileSource):
    """JSONL files (plain or gzip); one JSON object per non-blank line."""

    _part = _JsonlFile


# ---------------------------------------------------------------------------------------------
# Parquet


class _ParquetFile(_FilePart):
    _unpickled = ("_table",)

    def __init__(self, path: str):
        self.path = path
        self._num_rows = readers.parquet_num_rows(path)
        self._table = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._num_rows

    def raw(self, i: int) -> tuple[Any, str]:
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._table = readers.read_parquet_table(self.path)
        return readers.parquet_row(self._table, i), f"{self.path} row {i}"


class ParquetSource(_MultiFileSource):
    """Parquet files; one record per row (rows numbered from 0 in messages)."""

    _part = _ParquetFile


# ---------------------------------------------------------------------------------------------
# ArrayRecord


class _ArrayRecordFile:
    def __init__(self, path: str):
        import grain

        self.path = path
        try:
            self._source = grain.sources.ArrayRecordDataSource([path])
            self._len = len(self._source)
        except Exception as e:  # array_record raises RuntimeError/ValueError variants
            raise DataError(f"cannot read as ArrayRecord: {e}", where=path) from e

    def __len__(self) -> int:
        return self._len

    def raw(self, i: int) -> tuple[Any, str]:
        where = f"{self.path} record {i}"
        return readers.decode_json(self._source[i], where, objects=False), where


class ArrayRecordSource(_MultiFileSource):
    """ArrayRecord files whose entries are JSON objects as UTF-8 bytes (records numbered from 0)."""

    _part = _ArrayRecordFile


def write_array_record(path: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Writes records (schema dicts) as an ArrayRecord file readable by `ArrayRecordSource`."""
    from array_record.python.array_record_module import ArrayRecordWriter

    # group_size:1 keeps random access cheap (one record per compressed chunk).
    writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
    try:
        for r in records:
            writer.write(json.dumps(r, ensure_ascii=False).encode("utf-8"))
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------
# TFDS


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "format='tfds' needs tensorflow_datasets, an optional extra: "
            "`pip install tensorflow-datasets` (with its array_record data sources), "
            "or convert the data to JSONL/Parquet/ArrayRecord"
        ) from e
    return tfds


def _to_python(value: Any) -> Any:
    """TFDS features (bytes, numpy arrays/scalars, nested dicts) -> plain Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_to_python(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(v) for v in value]
    return value


class TfdsSource(RecordSource):
    """A TFDS split through ``tfds.data_source`` (random access; needs tensorflow_datasets)."""

    def __init__(self, name: str, *, split: str = "train", data_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        tfds = _import_tfds()
        self.description = f"tfds {name} split {split}"
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as e:  # tfds raises many types for a missing/unprepared dataset
            raise DataError(f"cannot open: {e}", where=self.description) from e
        self._len = len(self._source)

    def __len__(self) -> int:
        return self._len

    def _raw(self, index: int) -> tuple[Any, str]:
        return _to_python(self._source[index]), f"{self.description} example {index}"


# ---------------------------------------------------------------------------------------------


_OPENERS: dict[str, Callable[..., RecordSource]] = {
    "jsonl": JsonlSource,
    "parquet": ParquetSource,
    "arrayrecord": ArrayRecordSource,
}


def expand_paths(path: str) -> list[str]:
    """The sorted files a path or glob names; raises DataError when there are none."""
    path = os.path.expanduser(os.fspath(path))
    if glob.has_magic(path):
        paths = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not paths:
            raise DataError(f"no files match the glob {path!r}")
        return paths
    if not os.path.isfile(path):
        raise DataError(f"no such file: {path!r}")
    return [path]


def open_source(
    path: str,
    format: str = "auto",
    *,
    split: str = "train",
    data_dir: str | None = None,
    fields: Mapping[str, str] | None = None,
    ignore_extra_fields: bool = False,
) -> RecordSource:
    """Opens one dataset: a local path or glob (or a TFDS name when ``format="tfds"``).

    Args:
      path: file path or glob; for TFDS the dataset name (``"name[/config][:version]"``).
      format: ``"auto"`` (from the file names) or one of `FORMATS`.
      split, data_dir: TFDS only.
      fields: renames source columns to record fields, e.g. ``{"query": "anchor"}``.
      ignore_extra_fields: skip unknown keys/columns instead of failing on them.

    Raises:
      DataError: no matching files, an unreadable file, or an empty dataset (before any training).
    """
    kwargs = {"fields": fields, "ignore_extra_fields": ignore_extra_fields}
    if format == "tfds":
        source: RecordSource = TfdsSource(path, split=split, data_dir=data_dir, **kwargs)
    else:
        paths = expand_paths(path)
        if format == "auto":
            formats = {detect_format(p) for p in paths}
            if len(formats) > 1:
                raise DataError(
                    f"{path!r} matches files of several formats ({sorted(formats)}); use one per dataset"
                )
            format = formats.pop()
        if format not in _OPENERS:
            raise DataError(
                f"unknown format {format!r} for {path!r} (expected auto or one of {FORMATS})"
            )
        source = _OPENERS[format](paths, **kwargs)
    if len(source) == 0:
        raise DataError("dataset is empty (no records)", where=source.description or path)
    return source
