"""Reading and writing task files (the layouts are in `eval.tasks`): one JSON object per line,
gzip allowed, every field checked, and every mistake a `TaskDataError` naming the file, the line
and the field, e.g. ``queries.jsonl line 3: field 'text': missing``."""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from embeddinggemma_jax import readers
from embeddinggemma_jax.errors import LocatedError

# A malformed task file. The package-wide located error, under the name this API always had.
TaskDataError = LocatedError


def find_file(folder: Path, *names: str, required: bool = True) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    if required:
        raise FileNotFoundError(errno.ENOENT, f"none of {', '.join(names)} found", str(folder))
    return None


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Yields ("file line N", object) for each non-blank line; a file without any is an error."""
    return readers.read_jsonl(path, allow_empty=False)


def get_field(obj: dict, name: str, where: str, kind: str, default: Any = ...) -> Any:
    """One validated field. kinds: str, text (non-empty str), id, number, int, label,
    binary, texts (non-empty list of str), numbers (list of numbers)."""
    if name not in obj or obj[name] is None:
        if default is not ...:
            return default
        raise TaskDataError("missing", where=where, field=name)
    v = obj[name]

    def bad(expected: str) -> TaskDataError:
        return TaskDataError(
            f"expected {expected}, got {type(v).__name__} {v!r:.60}", where=where, field=name
        )

    is_int = isinstance(v, int) and not isinstance(v, bool)
    if kind in ("str", "text"):
        if not isinstance(v, str):
            raise bad("a string")
        if kind == "text" and not v.strip():
            raise TaskDataError("is empty", where=where, field=name)
        return v
    if kind == "id":
        if not (isinstance(v, str) or is_int) or (isinstance(v, str) and not v):
            raise bad("a non-empty string or integer id")
        return str(v)
    if kind == "number":
        if not (is_int or isinstance(v, float)) or not math.isfinite(v):
            raise bad("a finite number")
        return float(v)
    if kind == "int":
        if not is_int:
            raise bad("an integer")
        return v
    if kind == "label":
        if not (isinstance(v, str) or is_int):
            raise bad("a string or integer label")
        return v
    if kind == "binary":
        if isinstance(v, bool):
            return int(v)
        if v not in (0, 1) or not is_int:
            raise bad("0 or 1")
        return v
    if kind == "texts":
        if not isinstance(v, list) or not v:
            raise bad("a non-empty list of strings")
        for i, t in enumerate(v):
            if not isinstance(t, str) or not t.strip():
                raise TaskDataError("must be a non-empty string", where=where, field=f"{name}[{i}]")
        return v
    if kind == "numbers":
        if not isinstance(v, list) or not v:
            raise bad("a non-empty list of numbers")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise TaskDataError("must be a finite number", where=where, field=f"{name}[{i}]")
        return [float(x) for x in v]
    raise AssertionError(kind)


def check_labels(labels: Sequence, where: str) -> None:
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise TaskDataError("labels mix strings and integers", where=where, field="label")


def read_ided(path: Path, *, title: bool) -> dict[str, tuple[str, str]]:
    """corpus.jsonl / queries.jsonl: {id: (title, text)}; duplicate ids are an error."""
    out: dict[str, tuple[str, str]] = {}
    first_seen: dict[str, str] = {}
    for where, obj in read_records(path):
        _id = get_field(obj, "_id", where, "id")
        if _id in out:
            raise TaskDataError(
                f"duplicate id {_id!r} (first at {first_seen[_id]})", where=where, field="_id"
            )
        text = get_field(obj, "text", where, "str" if title else "text")
        t = get_field(obj, "title", where, "str", default="") if title else ""
        if title and not (text.strip() or t.strip()):
            raise TaskDataError("document has neither title nor text", where=where, field="text")
        out[_id] = (t, text)
        first_seen[_id] = where
    return out


def read_qrels(folder: Path, query_ids: set[str]) -> dict[str, dict[str, int]]:
    path = find_file(folder, "qrels.tsv", "qrels.jsonl", "qrels/test.tsv")
    qrels: dict[str, dict[str, int]] = {}

    def add(where: str, qid: str, did: str, score: int) -> None:
        if qid not in query_ids:
            raise TaskDataError(
                f"query id {qid!r} is not in queries.jsonl", where=where, field="query-id"
            )
        if did in qrels.setdefault(qid, {}):
            raise TaskDataError(
                f"duplicate judgement of ({qid!r}, {did!r})", where=where, field="corpus-id"
            )
        qrels[qid][did] = score

    if path.name.endswith((".jsonl", ".jsonl.gz")):
        for where, obj in read_records(path):
            add(
                where,
                get_field(obj, "query-id", where, "id"),
                get_field(obj, "corpus-id", where, "id"),
                get_field(obj, "score", where, "int"),
            )
        return qrels
    n = 0
    for where, line in readers.read_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if n == 0 and [c.strip() for c in cols] == ["query-id", "corpus-id", "score"]:
            continue  # BEIR header
        n += 1
        if len(cols) != 3:
            raise TaskDataError(
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}",
                where=where,
            )
        qid, did, score = (c.strip() for c in cols)
        if not qid or not did:
            raise TaskDataError(
                "empty id", where=where, field="query-id" if not qid else "corpus-id"
            )
        try:
            value = int(score)
        except ValueError:
            raise TaskDataError(
                f"expected an integer, got {score!r}", where=where, field="score"
            ) from None
        add(where, qid, did, value)
    if not qrels:
        raise TaskDataError("no records", where=str(path))
    return qrels
