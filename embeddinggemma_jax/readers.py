"""One reader per file format: JSONL (plain or gzip), Parquet, plain text lines.

Every reader yields ``(where, value)``: `where` names the record for error messages
(``"train.jsonl line 12"``, ``"pairs.parquet row 0"``) and every problem with the file raises
`errors.LocatedError` naming the file and, where there is one, the line::

    for where, obj in readers.read_records("train.jsonl.gz"):   # JSONL or Parquet, by suffix
        ...                                                      # obj: dict
    for where, line in readers.read_lines("queries.txt"):       # every line, blank ones too
        ...

Rules shared by all of them: files are UTF-8 (a leading byte-order mark is ignored; a file that is
not UTF-8 is an error at the line where it stops being so); lines end at ``\\n`` (a ``\\r`` before
it is dropped; U+2028, form feeds and other characters stay in the line); a name ending in ``.gz``
is decompressed. JSONL skips blank lines; line numbers are physical (blank lines counted).

`write_jsonl` is the matching writer (UTF-8, one object a line, non-ASCII kept as it is).

The random-access sources of `data.sources` use the same pieces (`decode_json`, `open_bytes`,
`read_parquet_table`), so a bad line reads the same whichever way it was reached.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from embeddinggemma_jax.errors import LocatedError

# Suffix -> format; the longest matching suffix wins.
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json.gz": "jsonl",
    ".ndjson.gz": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
}
FORMATS = ("jsonl", "parquet", "text")
BOM = b"\xef\xbb\xbf"
GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def detect_format(path: str | os.PathLike, suffixes: dict[str, str] = SUFFIXES) -> str:
    """The format a file name implies (`SUFFIXES`); LocatedError when it implies none."""
    name = os.path.basename(os.fspath(path)).lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.endswith(suffix):
            return suffixes[suffix]
    raise LocatedError(
        f"cannot tell the format from the file name (expected a name ending in "
        f"{', '.join(sorted(suffixes))})",
        where=str(path),
    )


def check_file(path: str | os.PathLike) -> str:
    """`path` as a string, after checking it names a readable file (LocatedError if not)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LocatedError("no such file", where=path)
    if not os.path.isfile(path):
        raise LocatedError("not a file", where=path)
    if not os.access(path, os.R_OK):
        raise LocatedError("permission denied", where=path)
    return path


def open_bytes(path: str | os.PathLike) -> IO[bytes]:
    """The file opened for reading bytes, decompressed when the name ends in ``.gz``."""
    path = check_file(path)
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    except OSError as e:
        raise LocatedError(f"cannot read: {e.strerror or e}", where=path) from e


def json_type(value: Any) -> str:
    """A JSON value's type in JSON's words, for messages: "an object", "an array", "null"..."""
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", int: "a number", float: "a number"}
    names.update({str: "a string", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def decode_text(line: bytes, where: str) -> str:
    """One line's bytes as text; LocatedError naming the column where it is not UTF-8."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LocatedError(
            f"not valid UTF-8 ({e.reason} at byte {e.start + 1} of the line)", where=where
        ) from e


def decode_json(line: bytes | str, where: str, *, objects: bool = True) -> Any:
    """One JSONL line decoded; `objects`: anything but a JSON object is an error too."""
    text = decode_text(line, where) if isinstance(line, bytes) else line
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise LocatedError(f"invalid JSON ({e.msg} at column {e.colno})", where=where) from e
    except RecursionError as e:
        raise LocatedError("invalid JSON (nested too deeply)", where=where) from e
    except ValueError as e:  # e.g. an integer longer than Python's digit limit
        raise LocatedError(f"invalid JSON ({e})", where=where) from e
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(value, where)
    if objects and not isinstance(value, dict):
        raise LocatedError(f"expected a JSON object, got {json_type(value)}", where=where)
    return value


# JSON may spell half of a UTF-16 surrogate pair alone ("\ud800"): Python decodes it to a str no
# encoder (the tokenizer's included) accepts. Only lines with such an escape are walked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_unicode(value: Any, where: str) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                char = f"\\u{ord(v[e.start]):04x}"
                raise LocatedError(
                    f"invalid JSON ({char} is half of a surrogate pair, not a character)",
                    where=where,
                ) from None


def _byte_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes without its line end) for every line of the file."""
    shown = os.fspath(path)
    number = 0
    # A local name: a generator left open until interpreter exit is closed after the module's
    # globals are cleared, and `except None` would print a warning then.
    gzip_errors = GZIP_ERRORS
    with open_bytes(path) as f:
        try:
            for number, line in enumerate(f, start=1):
                if number == 1 and line.startswith(BOM):
                    line = line[len(BOM) :]
                if line.endswith(b"\n"):
                    line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                yield number, line
        except gzip_errors as e:
            where = f"{shown} line {number + 1}"
            raise LocatedError(f"cannot decompress: {e}", where=where) from e


def read_lines(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Yields ``(where, line)`` for every line, blank ones included; a final newline does not add
    an empty line."""
    shown = os.fspath(path)
    for number, line in _byte_lines(path):
        where = f"{shown} line {number}"
        yield where, decode_text(line, where)


def read_jsonl(
    path: str | os.PathLike, *, objects: bool = True, allow_empty: bool = True
) -> Iterator[tuple[str, Any]]:
    """Yields ``(where, value)`` for each non-blank line of a JSONL file (plain or gzip).

    Args:
      objects: every line must hold a JSON object (a dict); False: any JSON value.
      allow_empty: False: a file without records is an error ("no records").
    """
    shown = os.fspath(path)
    count = 0
    for number, line in _byte_lines(path):
        if not line.strip():
            continue
        where = f"{shown} line {number}"
        count += 1
        yield where, decode_json(line, where, objects=objects)
    if not count and not allow_empty:
        raise LocatedError("no records", where=shown)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping]) -> int:
    """`rows` as JSONL at `path` (UTF-8, non-ASCII as it is); returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_parquet_table(path: str | os.PathLike):
    """The whole file as a ``pyarrow.Table`` (LocatedError when it is not Parquet)."""
    import pyarrow.parquet as pq

    path = check_file(path)
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged or foreign file
        raise LocatedError(f"cannot read as Parquet: {e}", where=path) from e


def parquet_num_rows(path: str | os.PathLike) -> int:
    """The row count from the file's footer, without reading the rows."""
    import pyarrow.parquet as pq

    path = check_file(path)
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # as above
        raise LocatedError(f"cannot read as Parquet: {e}", where=path) from e


def parquet_row(table, i: int) -> dict[str, Any]:
    """Row `i` of a ``pyarrow.Table`` as a dict of Python values."""
    return {name: col[i].as_py() for name, col in zip(table.column_names, table.columns)}


def read_parquet(
    path: str | os.PathLike, *, allow_empty: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(where, row)`` for each row; rows are numbered from 0 (``"x.parquet row 0"``)."""
    shown = os.fspath(path)
    table = read_parquet_table(path)
    if table.num_rows == 0 and not allow_empty:
        raise LocatedError("no records", where=shown)
    for i in range(table.num_rows):
        yield f"{shown} row {i}", parquet_row(table, i)


def read_records(
    path: str | os.PathLike, format: str = "auto", *, allow_empty: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(where, record)`` from a JSONL or Parquet file, the format from its name unless
    given (``"jsonl"`` or ``"parquet"``); every record is a dict."""
    if format == "auto":
        format = detect_format(path, {k: v for k, v in SUFFIXES.items() if v != "text"})
    if format == "jsonl":
        return read_jsonl(path, allow_empty=allow_empty)
    if format == "parquet":
        return read_parquet(path, allow_empty=allow_empty)
    raise LocatedError(
        f"unknown record format {format!r} (expected auto, jsonl or parquet)", where=str(path)
    )
