"""The one reader per file format: what each line becomes, where each problem is located, and
(property-based, with hypothesis) that hostile input - arbitrary bytes and Unicode, control
characters, NUL, invalid UTF-8, lone surrogates, huge or deeply nested lines, empty files - either
reads or raises `LocatedError` naming the file and line, through every reader built on them: the
training sources and record schema, the embed CLI's reader, the evaluation task files and the
tokenizer with prompts."""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import math
import textwrap

import pytest
from conftest import train_tiny_tokenizer
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from embeddinggemma_jax import embed, readers
from embeddinggemma_jax.data.records import Record, parse_record
from embeddinggemma_jax.data.sources import JsonlSource, detect_format
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.eval.registry import load_task
from embeddinggemma_jax.text.prompts import apply_document_prompts, apply_prompt

# No example database: a fresh clone's test run writes nothing into the tree.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _write(path, data: bytes):
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ---------------------------------------------------------------------------------------------
# The rules, by example


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_jsonl_lines_bom_crlf_blank_and_locations(tmp_path, name):
    path = _write(tmp_path / name, b'\xef\xbb\xbf{"a": 1}\r\n\n  \t\n{"b": "x\\u2028y"}\n\n')
    got = list(readers.read_jsonl(path))
    assert got == [(f"{path} line 1", {"a": 1}), (f"{path} line 4", {"b": "x\u2028y"})]


def test_text_lines_keep_every_line(tmp_path):
    path = _write(tmp_path / "t.txt", "\ufeffa\r\n\r\nb\u2028c\x0cd\n\n".encode())
    assert [line for _, line in readers.read_lines(path)] == ["a", "", "b\u2028c\x0cd", ""]
    assert [w for w, _ in readers.read_lines(path)][-1] == f"{path} line 4"
    assert list(readers.read_lines(_write(tmp_path / "e.txt", b""))) == []
    assert [line for _, line in readers.read_lines(_write(tmp_path / "n.txt", b"x"))] == ["x"]


BAD_LINES = [
    # (line 2 of a JSONL file, fragment of the message)
    (b'{"a": ', "line 2: invalid JSON (Expecting value at column 7)"),
    (b"[1, 2]", "line 2: expected a JSON object, got an array"),
    (b'"text"', "line 2: expected a JSON object, got a string"),
    (b'{"a": "\xff"}', "line 2: not valid UTF-8 (invalid start byte at byte 8 of the line)"),
    (b'{"a": "x\x00y"}', "line 2: invalid JSON (Invalid control character"),
    (b"[" * 100_000, "line 2: invalid JSON (nested too deeply)"),
    (b'{"n": ' + b"9" * 5000 + b"}", "line 2: invalid JSON (Exceeds the limit"),
    (b'{"a": "\\udc00"}', "line 2: invalid JSON (\\udc00 is half of a surrogate pair"),
]


@pytest.mark.parametrize("line,message", BAD_LINES, ids=[m[8:40] for _, m in BAD_LINES])
def test_bad_line_is_located(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", b'{"ok": true}\n' + line + b"\n")
    with pytest.raises(LocatedError) as e:
        list(readers.read_jsonl(path))
    assert str(e.value).startswith(f"{path} {message}"), str(e.value)
    # The random-access training source reads the same line the same way.
    with pytest.raises(LocatedError) as e2:
        JsonlSource([str(path)])[1]
    assert e2.value.where == e.value.where and (
        e2.value.reason == e.value.reason or "JSON object" in e.value.reason
    )


def test_file_level_problems(tmp_path):
    with pytest.raises(LocatedError, match=r"nope\.jsonl: no such file$"):
        list(readers.read_jsonl(tmp_path / "nope.jsonl"))
    with pytest.raises(LocatedError, match=": not a file$"):
        list(readers.read_lines(tmp_path))
    with pytest.raises(LocatedError, match=r"empty\.jsonl: no records$"):
        list(readers.read_jsonl(_write(tmp_path / "empty.jsonl", b"\n \n"), allow_empty=False))
    assert list(readers.read_jsonl(tmp_path / "empty.jsonl")) == []
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-30])
    with pytest.raises(LocatedError, match=r"broken\.jsonl\.gz line \d+: cannot decompress"):
        list(readers.read_jsonl(broken))
    with pytest.raises(LocatedError, match=r"x\.csv: cannot tell the format"):
        readers.read_records(tmp_path / "x.csv")
    assert detect_format("a/b.JSONL.GZ") == "jsonl" and readers.detect_format("t.txt") == "text"


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"query": ["a", "b"], "n": [1, None]}), path)
    assert list(readers.read_records(path)) == [
        (f"{path} row 0", {"query": "a", "n": 1}),
        (f"{path} row 1", {"query": "b", "n": None}),
    ]
    _write(tmp_path / "fake.parquet", b"PAR1 not really")
    with pytest.raises(LocatedError, match=r"fake\.parquet: cannot read as Parquet"):
        list(readers.read_records(tmp_path / "fake.parquet"))


def test_huge_line_reads(tmp_path):
    text = "x" * 3_000_000
    path = _write(tmp_path / "big.jsonl", json.dumps({"text": text}).encode() + b"\n")
    assert embed.read_records(path).texts == [text]


# ---------------------------------------------------------------------------------------------
# Hostile input, property-based

# Any text, mixed with characters the tokenizer could trip on: lone surrogates (not Unicode
# text), NUL and control characters, separators, a byte-order mark, Gemma's special piece strings.
ODD = [
    "\ud800",
    "\udfff",
    "\x00",
    "\x1b",
    "\r",
    "\u2028",
    "\ufeff",
    "<eos>",
    "\U0010ffff",
    "\u0301",
]
ANY_TEXT = st.lists(st.text(max_size=20) | st.sampled_from(ODD), max_size=6).map("".join)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    ["query", "positive", "negatives", "title", "task", "query_id", "positive_id", "teacher",
     "text", "id", "sentence1", "sentence2", "score", "label", "_id"]
)  # fmt: skip
# Objects whose keys are the schemas' own field names, so values of every type reach every check.
RECORDS = st.dictionaries(FIELD_NAMES | st.text(max_size=6), JSON, max_size=6)
# Mostly non-blank, valid text; one time in ten anything.
TEXT = st.integers(0, 9).flatmap(
    lambda i: ANY_TEXT if i == 0 else st.text(min_size=1, max_size=30).filter(str.strip)
)
VECTOR = st.lists(st.floats(-2, 2), min_size=3, max_size=3)
# Valid values per field; `near` records take these mostly and any JSON value sometimes.
VALID = {
    "query": TEXT, "positive": TEXT, "negatives": st.lists(TEXT, max_size=3),
    "title": st.none() | ANY_TEXT, "task": st.sampled_from(["query", "STS", ""]),
    "query_id": st.integers() | st.text(max_size=5), "positive_id": st.integers(),
    "teacher": st.fixed_dictionaries({"query": VECTOR, "positive": VECTOR}),
    "text": TEXT, "id": st.integers(0, 9) | st.text(max_size=3),
    "sentence1": TEXT, "sentence2": TEXT, "score": st.floats(0, 5),
    "label": st.integers(0, 1),
}  # fmt: skip
SCHEMAS = [
    ("query", "positive", "negatives", "title", "task", "query_id", "positive_id", "teacher"),
    ("text", "title", "id"),  # embed
    ("sentence1", "sentence2", "score"),  # STS
    ("sentence1", "sentence2", "label"),  # pair classification
    ("text", "label"),  # clustering, classification
]


@st.composite
def near_records(draw, schema: tuple[str, ...] | None = None) -> dict:
    """A record of one schema: each field mostly present and valid, sometimes missing or any JSON
    value."""
    out = {}
    for name in schema or draw(st.sampled_from(SCHEMAS)):
        if draw(st.integers(0, 19)) < 19:
            out[name] = draw(VALID[name] if draw(st.integers(0, 19)) < 19 else JSON)
    return out


@st.composite
def task_file(draw, schema: tuple[str, ...]) -> bytes:
    """A task's test.jsonl: mostly records of its schema, now and then a hostile line."""
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 9)) < 9:
            lines.append(_dumps(draw(near_records(schema)), draw(st.booleans())) + b"\n")
        else:
            lines.append(draw(jsonl_bytes()))
    return b"".join(lines)


LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r", b""])


def _dumps(value, ascii_only: bool) -> bytes:
    # A lone surrogate written raw (not escaped) is invalid UTF-8 in the file, as it should be.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def jsonl_bytes(draw) -> bytes:
    """A file mixing records, JSON lines, blank lines, random bytes and text, any line ends."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(
            st.sampled_from(["near", "near", "near", "record", "json", "blank", "bytes", "text"])
        )
        if kind == "near":
            line = _dumps(draw(near_records()), draw(st.booleans()))
        elif kind == "record":
            line = _dumps(draw(RECORDS), draw(st.booleans()))
        elif kind == "json":
            line = _dumps(draw(JSON), draw(st.booleans()))
        elif kind == "blank":
            line = draw(st.sampled_from([b"", b" ", b"\t \x0b\x0c", b"\xef\xbb\xbf"]))
        elif kind == "bytes":
            line = draw(st.binary(max_size=40))
        else:
            line = draw(ANY_TEXT).encode("utf-8", "surrogatepass")
        parts.append(line + draw(LINE_ENDS))
    return b"".join(parts)


def _located(error: LocatedError, path) -> None:
    assert error.where is not None and error.where.startswith(str(path)), error
    assert "\n" not in str(error)


def _canonical(value):
    """JSON values compared with NaN equal to itself."""
    return json.dumps(value, sort_keys=True, default=str)


@FUZZ
@given(data=jsonl_bytes(), gz=st.booleans())
def test_any_bytes_read_or_located(tmp_path, data, gz):
    path = _write(tmp_path / ("f.jsonl.gz" if gz else "f.jsonl"), data)
    try:
        streamed = list(readers.read_jsonl(path, objects=False))
    except LocatedError as e:
        _located(e, path)
        streamed = e
    event("located" if isinstance(streamed, LocatedError) else "read")
    # Random access (the training sources) agrees with streaming, record for record.
    try:
        source = JsonlSource([str(path)])
        indexed = [source._parts[0].raw(i)[::-1] for i in range(len(source))]
    except LocatedError as e:
        _located(e, path)
        indexed = e
    if isinstance(streamed, LocatedError) or isinstance(indexed, LocatedError):
        assert isinstance(streamed, LocatedError) and isinstance(indexed, LocatedError)
        assert (streamed.where, streamed.reason) == (indexed.where, indexed.reason)
    else:
        assert [(w, _canonical(v)) for w, v in streamed] == [(w, _canonical(v)) for w, v in indexed]
        for where, _ in streamed:
            assert where.startswith(f"{path} line ")


@FUZZ
@given(obj=near_records(SCHEMAS[0]) | near_records() | RECORDS | JSON)
def test_any_json_is_a_record_or_located(obj):
    try:
        record = parse_record(obj, where="t.jsonl line 3")
    except LocatedError as e:
        assert str(e).startswith("t.jsonl line 3: ") and "\n" not in e.reason
        event("located")
        return
    event("record")
    assert isinstance(record, Record) and record.query.strip() and record.positive.strip()
    if record.teacher is not None:
        assert all(math.isfinite(x) for x in record.teacher.query)


@FUZZ
@given(data=jsonl_bytes(), suffix=st.sampled_from([".jsonl", ".txt"]))
def test_embed_reader_reads_or_locates(tmp_path, data, suffix):
    path = _write(tmp_path / f"in{suffix}", data)
    try:
        records = embed.read_records(path)
    except LocatedError as e:
        _located(e, path)
        event("located")
        return
    event(f"read {suffix}")
    assert len(records.texts) == len(records.ids)
    assert all(isinstance(t, str) for t in records.texts)
    if suffix == ".txt":  # every line a text, \n the only separator
        lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
        assert len(records.texts) == len(lines) - (lines[-1] == b"")


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["STS", "Clustering", "PairClassification"]))
def test_eval_task_files_load_or_locate(tmp_path, data, kind):
    folder = tmp_path / "task"
    folder.mkdir(exist_ok=True)
    (folder / "task.json").write_text(json.dumps({"type": kind, "name": "fuzz"}))
    schema = {"STS": SCHEMAS[2], "PairClassification": SCHEMAS[3], "Clustering": SCHEMAS[4]}
    path = _write(folder / "test.jsonl", data.draw(task_file(schema[kind])))
    try:
        task = load_task(folder)
    except LocatedError as e:
        assert e.where is not None and str(folder) in e.where, e
        assert "\n" not in str(e)
        event("located")
        return
    event(f"loaded {kind}")
    assert task.name == "fuzz" and str(path)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = "\n".join(inspect.getdoc(m) for m in (argparse, json, textwrap))
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"), corpus)


@FUZZ
@example(texts=["\ud800", "ok"], titles=None)
@example(texts=["a\x00b", ""], titles=["<eos>", None])
@given(
    texts=st.lists(ANY_TEXT, max_size=4),
    titles=st.none() | st.lists(st.none() | ANY_TEXT, min_size=4, max_size=4),
)
def test_tokenizer_and_prompts_take_any_unicode(tokenizer, texts, titles):
    """Any str, control characters, NUL and lone surrogates included: token ids, or a ValueError
    naming the text (a lone surrogate is not Unicode text)."""
    titles = titles[: len(texts)] if titles else None
    for make in (
        lambda: apply_document_prompts(texts, titles),
        lambda: apply_prompt("task: search result | query: ", texts),
    ):
        try:
            batch = make()
            ids = tokenizer.encode(batch)
        except ValueError as e:
            assert "lone surrogate" in str(e), e
            assert not all(map(_is_unicode, [*texts, *(t for t in titles or () if t)]))
            event("refused")
            continue
        event("encoded")
        assert len(ids) == len(batch)
        assert all(row[0] == tokenizer.bos_id and row[-1] == tokenizer.eos_id for row in ids)
