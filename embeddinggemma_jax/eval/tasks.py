"""Evaluation tasks: read from local files or built from text that ships with Python.

A task is a folder. `task.json` names its type (and optionally its name, prompts and options);
a folder with `corpus.jsonl` and no `task.json` is read as a BEIR retrieval task. Files may be
gzipped (`name.jsonl.gz`). One JSON object per line; blank lines are skipped.

    task.json            {"type": "Retrieval", "name": "my-task",        # name: default folder name
                          "query_prompt": "Retrieval",                   # optional prompt names
                          "prompt": "STS", "k_values": [1, 10, 100]}     # (type-specific options)

    Retrieval            corpus.jsonl   {"_id": str, "title": str (optional), "text": str}
                         queries.jsonl  {"_id": str, "text": str}
                         qrels.tsv      query-id <TAB> corpus-id <TAB> score   (header line optional)
                           or qrels.jsonl {"query-id": str, "corpus-id": str, "score": int}
                           or qrels/test.tsv (BEIR)
    Reranking            as Retrieval, plus
                         candidates.jsonl {"query-id": str, "corpus-ids": [str, ...]}
    STS                  test.jsonl     {"sentence1": str, "sentence2": str, "score": number}
    PairClassification   test.jsonl     {"sentence1": str, "sentence2": str, "label": 0 | 1}
    Classification       train.jsonl, test.jsonl   {"text": str, "label": str | int}
    Clustering           test.jsonl     {"text": str, "label": str | int}
    BitextMining         test.jsonl     {"sentence1": str, "sentence2": str,
                                         "subset": str (optional, e.g. a language pair)}
    Summarization        test.jsonl     {"human_summaries": [str, ...],
                                         "machine_summaries": [str, ...],
                                         "relevance": [number, ...]}   (one per machine summary)

Ids may also be JSON integers (they are read as strings). Malformed input raises
`TaskDataError` naming the file, the line and the field, e.g.
``queries.jsonl line 3: field 'text': missing``.

Retrieval follows MTEB: queries without any qrels line are dropped; qrels of a query id that is
not in queries.jsonl are an error; judged documents missing from the corpus still count as
relevant (trec_eval semantics, see `eval.metrics`).

Encoding protocol. `Task.evaluate(encode_fn, dims)` calls

    encode_fn(texts: list[str], prompt_name: str | None, dim: int) -> np.ndarray [N, dim]

(L2-normalised rows). `prompt_name` is a key of the model's prompt table: each task type asks
for its own name ("Retrieval", "STS", "Classification", ..., as in EmbeddingGemma's table) for
queries and symmetric texts. Documents are passed already prefixed with
`document_prompt(title)` ("title: {title | none} | text: ") and `prompt_name=None`, meaning "add
no prompt". `Embedder.encode(texts, prompt_name=..., dim=...)` satisfies this protocol;
`TruncatingEncoder` wraps an encoder so that all Matryoshka widths come from one encoding.

Results: `{dim: {metric: value, ..., "main_score": value}}`; the main score per task type is
`eval.metrics.MAIN_SCORES`.
"""

from __future__ import annotations

import abc
import dataclasses
import gzip
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embeddinggemma_jax.eval import metrics
from embeddinggemma_jax.text.prompts import apply_document_prompts

__all__ = [
    "BUILTIN_TASKS",
    "BitextMiningTask",
    "ClassificationTask",
    "ClusteringTask",
    "EncodeFn",
    "PairClassificationTask",
    "RerankingTask",
    "RetrievalTask",
    "STSTask",
    "SummarizationTask",
    "Task",
    "TaskDataError",
    "TruncatingEncoder",
    "default_cache_dir",
    "get_task",
    "load_task",
]

EncodeFn = Callable[[Sequence[str], "str | None", int], np.ndarray]
Results = dict[int, dict[str, float]]


class TaskDataError(ValueError):
    """A malformed task file: the message names the file, the line and the field."""

    def __init__(self, message: str, *, where: str, field: str | None = None):
        self.where, self.field, self.reason = where, field, message
        super().__init__(": ".join([where, *([f"field {field!r}"] if field else []), message]))


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _find(folder: Path, *names: str, required: bool = True) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    if required:
        raise FileNotFoundError(f"{folder}: none of {', '.join(names)} found")
    return None


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """Yields (location, object) for each non-blank line; location is "file line N"."""
    n = 0
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"invalid JSON ({e.msg}, column {e.colno})", where=where) from e
            if not isinstance(obj, dict):
                raise TaskDataError(
                    f"expected a JSON object, got {type(obj).__name__}", where=where
                )
            n += 1
            yield where, obj
    if n == 0:
        raise TaskDataError("no records", where=str(path))


def _get(obj: dict, name: str, where: str, kind: str, default: Any = ...) -> Any:
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


def _check_labels(labels: Sequence, where: str) -> None:
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise TaskDataError("labels mix strings and integers", where=where, field="label")


def _read_ided(path: Path, *, title: bool) -> dict[str, tuple[str, str]]:
    """corpus.jsonl / queries.jsonl: {id: (title, text)}; duplicate ids are an error."""
    out: dict[str, tuple[str, str]] = {}
    first_seen: dict[str, str] = {}
    for where, obj in _read_jsonl(path):
        _id = _get(obj, "_id", where, "id")
        if _id in out:
            raise TaskDataError(
                f"duplicate id {_id!r} (first at {first_seen[_id]})", where=where, field="_id"
            )
        text = _get(obj, "text", where, "str" if title else "text")
        t = _get(obj, "title", where, "str", default="") if title else ""
        if title and not (text.strip() or t.strip()):
            raise TaskDataError("document has neither title nor text", where=where, field="text")
        out[_id] = (t, text)
        first_seen[_id] = where
    return out


def _read_qrels(folder: Path, query_ids: set[str]) -> dict[str, dict[str, int]]:
    path = _find(folder, "qrels.tsv", "qrels.jsonl", "qrels/test.tsv")
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
        for where, obj in _read_jsonl(path):
            add(
                where,
                _get(obj, "query-id", where, "id"),
                _get(obj, "corpus-id", where, "id"),
                _get(obj, "score", where, "int"),
            )
        return qrels
    with _open_text(path) as f:
        n = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            cols = line.rstrip("\r\n").split("\t")
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


# --------------------------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------------------------


def _encode(encode_fn: EncodeFn, texts: Sequence[str], prompt_name: str | None, dim) -> np.ndarray:
    emb = np.asarray(encode_fn(list(texts), prompt_name=prompt_name, dim=dim))
    if emb.ndim != 2 or emb.shape[0] != len(texts) or (dim is not None and emb.shape[1] != dim):
        raise ValueError(
            f"encode_fn returned shape {emb.shape} for {len(texts)} texts at dim={dim} "
            f"(prompt_name={prompt_name!r})"
        )
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"encode_fn returned NaN/inf (prompt_name={prompt_name!r}, dim={dim})")
    return emb.astype(np.float32)


class TruncatingEncoder:
    """Wraps a full-width encoder so that each (texts, prompt) is encoded once: smaller dims are
    the leading coordinates re-normalised (Matryoshka truncation, what sentence-transformers'
    `truncate_dim` does). Not for quantised encoders, whose narrower outputs differ."""

    def __init__(self, encode_fn: EncodeFn, full_dim: int):
        self.encode_fn, self.full_dim = encode_fn, full_dim
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, texts: Sequence[str], prompt_name: str | None, dim: int) -> np.ndarray:
        if dim > self.full_dim:
            raise ValueError(f"dim {dim} exceeds the model's width {self.full_dim}")
        key = (prompt_name, tuple(texts))
        if key not in self._cache:
            self._cache[key] = _encode(self.encode_fn, texts, prompt_name, self.full_dim)
        emb = self._cache[key][:, :dim]
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task(abc.ABC):
    """An evaluation task. Subclasses hold the data and implement `_evaluate_dim`."""

    type: ClassVar[str]
    name: str

    @property
    def main_score(self) -> str:
        return metrics.MAIN_SCORES[self.type]

    def evaluate(self, encode_fn: EncodeFn, dims: Sequence[int]) -> Results:
        """{dim: {metric: value, ..., "main_score": value}} for each Matryoshka width."""
        if isinstance(dims, int):
            dims = [dims]
        out: Results = {}
        for dim in dims:
            scores = self._evaluate_dim(encode_fn, dim)
            out[dim] = {**scores, "main_score": scores[self.main_score]}
        return out

    @abc.abstractmethod
    def _evaluate_dim(self, encode_fn: EncodeFn, dim: int) -> dict[str, float]: ...

    @abc.abstractmethod
    def save(self, folder: str | os.PathLike) -> Path:
        """Writes the task in the documented layout (so `load_task(folder)` reads it back)."""

    def _write_meta(self, folder: Path, **options) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"type": self.type, "name": self.name, **options}
        (folder / "task.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclasses.dataclass
class RetrievalTask(Task):
    """corpus {doc_id: (title, text)}, queries {query_id: text}, qrels {qid: {doc_id: grade}}."""

    type: ClassVar[str] = "Retrieval"
    corpus: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    queries: Mapping[str, str] = dataclasses.field(default_factory=dict)
    qrels: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    query_prompt: str | None = None  # default: the type name ("Retrieval" / "Reranking")
    k_values: Sequence[int] = metrics.DEFAULT_K_VALUES
    query_chunk: int = 256  # queries scored at once (bounds the [Q, D] score matrix)

    def __post_init__(self):
        # As MTEB: only queries with judgements are evaluated.
        self.queries = {q: t for q, t in self.queries.items() if self.qrels.get(q)}
        if not self.queries:
            raise ValueError(f"task {self.name!r}: no query has qrels")
        if not self.corpus:
            raise ValueError(f"task {self.name!r}: empty corpus")

    def _encode_both(self, encode_fn, dim):
        qids, qtexts = list(self.queries), list(self.queries.values())
        dids = list(self.corpus)
        titles = [self.corpus[d][0] for d in dids]
        docs = apply_document_prompts([self.corpus[d][1] for d in dids], titles)
        q = _encode(encode_fn, qtexts, self.query_prompt or self.type, dim)
        d = _encode(encode_fn, docs, None, dim)
        return qids, q, dids, d

    def _per_query(self, qids, q, dids, d, candidates=None) -> dict[str, float]:
        values: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(qids), self.query_chunk):
            sl = slice(start, start + self.query_chunk)
            _, chunk = metrics.retrieval_scores_per_query(
                metrics.cosine_similarity_matrix(q[sl], d),
                self.qrels,
                query_ids=qids[sl],
                doc_ids=dids,
                k_values=self.k_values,
                candidates_qd=None if candidates is None else candidates[sl],
            )
            for k, v in chunk.items():
                values.setdefault(k, []).append(v)
        return {k: float(np.concatenate(v).mean()) for k, v in values.items()}

    def _evaluate_dim(self, encode_fn, dim):
        return self._per_query(*self._encode_both(encode_fn, dim))

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        _write_jsonl(
            folder / "corpus.jsonl",
            [{"_id": i, "title": t, "text": x} for i, (t, x) in self.corpus.items()],
        )
        _write_jsonl(
            folder / "queries.jsonl", [{"_id": i, "text": t} for i, t in self.queries.items()]
        )
        with open(folder / "qrels.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in self.qrels.items():
                for did, score in docs.items():
                    f.write(f"{qid}\t{did}\t{score}\n")
        return folder

    def _options(self) -> dict:
        opts: dict[str, Any] = {"k_values": list(self.k_values)}
        if self.query_prompt:
            opts["query_prompt"] = self.query_prompt
        return opts

    @staticmethod
    def _read_parts(folder: Path):
        corpus = _read_ided(_find(folder, "corpus.jsonl"), title=True)
        queries = _read_ided(_find(folder, "queries.jsonl"), title=False)
        queries = {k: text for k, (_, text) in queries.items()}
        return corpus, queries, _read_qrels(folder, set(queries))

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> RetrievalTask:
        corpus, queries, qrels = cls._read_parts(folder)
        return cls(name=name, corpus=corpus, queries=queries, qrels=qrels, **options)


@dataclasses.dataclass
class RerankingTask(RetrievalTask):
    """Retrieval restricted to each query's candidates {query_id: [doc_id, ...]} (MTEB v2)."""

    type: ClassVar[str] = "Reranking"
    candidates: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        missing = [q for q in self.queries if not self.candidates.get(q)]
        if missing:
            raise ValueError(f"task {self.name!r}: query {missing[0]!r} has no candidates")

    def _evaluate_dim(self, encode_fn, dim):
        qids, q, dids, d = self._encode_both(encode_fn, dim)
        col = {did: j for j, did in enumerate(dids)}
        mask = np.zeros((len(qids), len(dids)), bool)
        for i, qid in enumerate(qids):
            mask[i, [col[c] for c in self.candidates[qid]]] = True
        return self._per_query(qids, q, dids, d, mask)

    def save(self, folder):
        folder = super().save(folder)
        _write_jsonl(
            folder / "candidates.jsonl",
            [{"query-id": q, "corpus-ids": list(c)} for q, c in self.candidates.items()],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> RerankingTask:
        corpus, queries, qrels = cls._read_parts(folder)
        candidates: dict[str, list[str]] = {}
        for where, obj in _read_jsonl(_find(folder, "candidates.jsonl")):
            qid = _get(obj, "query-id", where, "id")
            if qid not in queries:
                raise TaskDataError(
                    f"query id {qid!r} is not in queries.jsonl", where=where, field="query-id"
                )
            if qid in candidates:
                raise TaskDataError(f"second line for query {qid!r}", where=where, field="query-id")
            ids = obj.get("corpus-ids")
            if not isinstance(ids, list) or not ids:
                raise TaskDataError(
                    "expected a non-empty list of ids", where=where, field="corpus-ids"
                )
            for i, did in enumerate(ids):
                if (
                    not isinstance(did, (str, int))
                    or isinstance(did, bool)
                    or str(did) not in corpus
                ):
                    raise TaskDataError(
                        f"{did!r} is not a corpus id", where=where, field=f"corpus-ids[{i}]"
                    )
            candidates[qid] = [str(d) for d in ids]
        return cls(
            name=name, corpus=corpus, queries=queries, qrels=qrels, candidates=candidates, **options
        )


@dataclasses.dataclass
class _PairTask(Task):
    """Two aligned text lists plus per-pair values (scores or labels)."""

    sentence1: Sequence[str] = ()
    sentence2: Sequence[str] = ()
    prompt: str | None = None  # default: the type name

    def _encode_pairs(self, encode_fn, dim):
        p = self.prompt or self.type
        return _encode(encode_fn, self.sentence1, p, dim), _encode(
            encode_fn, self.sentence2, p, dim
        )

    def _options(self) -> dict:
        return {"prompt": self.prompt} if self.prompt else {}


@dataclasses.dataclass
class STSTask(_PairTask):
    type: ClassVar[str] = "STS"
    scores: Sequence[float] = ()

    def _evaluate_dim(self, encode_fn, dim):
        return metrics.sts_scores(*self._encode_pairs(encode_fn, dim), self.scores)

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        rows = zip(self.sentence1, self.sentence2, self.scores, strict=True)
        _write_jsonl(
            folder / "test.jsonl",
            [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in rows],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> STSTask:
        s1, s2, scores = [], [], []
        for where, obj in _read_jsonl(_find(folder, "test.jsonl")):
            s1.append(_get(obj, "sentence1", where, "text"))
            s2.append(_get(obj, "sentence2", where, "text"))
            scores.append(_get(obj, "score", where, "number"))
        return cls(name=name, sentence1=s1, sentence2=s2, scores=scores, **options)


@dataclasses.dataclass
class PairClassificationTask(_PairTask):
    type: ClassVar[str] = "PairClassification"
    labels: Sequence[int] = ()

    def _evaluate_dim(self, encode_fn, dim):
        return metrics.pair_classification_scores(*self._encode_pairs(encode_fn, dim), self.labels)

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        rows = zip(self.sentence1, self.sentence2, self.labels, strict=True)
        _write_jsonl(
            folder / "test.jsonl",
            [{"sentence1": a, "sentence2": b, "label": y} for a, b, y in rows],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> PairClassificationTask:
        s1, s2, labels = [], [], []
        path = _find(folder, "test.jsonl")
        for where, obj in _read_jsonl(path):
            s1.append(_get(obj, "sentence1", where, "text"))
            s2.append(_get(obj, "sentence2", where, "text"))
            labels.append(_get(obj, "label", where, "binary"))
        if 1 not in labels:
            raise TaskDataError("no pair has label 1", where=str(path), field="label")
        return cls(name=name, sentence1=s1, sentence2=s2, labels=labels, **options)


@dataclasses.dataclass
class BitextMiningTask(_PairTask):
    """sentence1[i] and sentence2[i] are translations; `subsets[i]` groups pairs (e.g. languages).
    Metrics are averaged over subsets; per-subset F1 is reported as "f1/<subset>"."""

    type: ClassVar[str] = "BitextMining"
    subsets: Sequence[str] | None = None

    def _evaluate_dim(self, encode_fn, dim):
        e1, e2 = self._encode_pairs(encode_fn, dim)
        subsets = np.asarray(self.subsets if self.subsets is not None else ["default"] * len(e1))
        names = list(dict.fromkeys(subsets.tolist()))
        per = {s: metrics.bitext_mining_scores(e1[subsets == s], e2[subsets == s]) for s in names}
        out = {m: float(np.mean([per[s][m] for s in names])) for m in per[names[0]]}
        if len(names) > 1:
            out.update({f"f1/{s}": per[s]["f1"] for s in names})
        return out

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        subsets = self.subsets if self.subsets is not None else [None] * len(self.sentence1)
        rows = []
        for a, b, s in zip(self.sentence1, self.sentence2, subsets, strict=True):
            rows.append(
                {"sentence1": a, "sentence2": b, **({"subset": s} if s is not None else {})}
            )
        _write_jsonl(folder / "test.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> BitextMiningTask:
        s1, s2, subsets = [], [], []
        for where, obj in _read_jsonl(_find(folder, "test.jsonl")):
            s1.append(_get(obj, "sentence1", where, "text"))
            s2.append(_get(obj, "sentence2", where, "text"))
            subsets.append(_get(obj, "subset", where, "text", default="default"))
        return cls(name=name, sentence1=s1, sentence2=s2, subsets=subsets, **options)


@dataclasses.dataclass
class _LabelledTask(Task):
    texts: Sequence[str] = ()
    labels: Sequence[str | int] = ()
    prompt: str | None = None

    def _options(self) -> dict:
        return {"prompt": self.prompt} if self.prompt else {}

    @staticmethod
    def _read(path: Path) -> tuple[list[str], list]:
        texts, labels = [], []
        for where, obj in _read_jsonl(path):
            texts.append(_get(obj, "text", where, "text"))
            labels.append(_get(obj, "label", where, "label"))
        _check_labels(labels, str(path))
        return texts, labels


@dataclasses.dataclass
class ClassificationTask(_LabelledTask):
    """Logistic-regression probe (MTEB few-shot: `samples_per_label` per label, `n_experiments`
    draws; `samples_per_label=None` trains on the whole train split)."""

    type: ClassVar[str] = "Classification"
    train_texts: Sequence[str] = ()
    train_labels: Sequence[str | int] = ()
    samples_per_label: int | None = 8
    n_experiments: int = 10

    def _evaluate_dim(self, encode_fn, dim):
        p = self.prompt or self.type
        return metrics.classification_scores(
            _encode(encode_fn, self.train_texts, p, dim),
            self.train_labels,
            _encode(encode_fn, self.texts, p, dim),
            self.labels,
            samples_per_label=self.samples_per_label,
            n_experiments=self.n_experiments,
        )

    def _options(self) -> dict:
        return {
            **super()._options(),
            "samples_per_label": self.samples_per_label,
            "n_experiments": self.n_experiments,
        }

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        for split, texts, labels in (
            ("train", self.train_texts, self.train_labels),
            ("test", self.texts, self.labels),
        ):
            rows = [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)]
            _write_jsonl(folder / f"{split}.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> ClassificationTask:
        train_texts, train_labels = cls._read(_find(folder, "train.jsonl"))
        texts, labels = cls._read(_find(folder, "test.jsonl"))
        unseen = sorted(set(map(str, labels)) - set(map(str, train_labels)))
        if unseen:
            raise TaskDataError(
                f"test labels never seen in train: {unseen[:5]}",
                where=f"{folder}/test.jsonl",
                field="label",
            )
        return cls(
            name=name,
            texts=texts,
            labels=labels,
            train_texts=train_texts,
            train_labels=train_labels,
            **options,
        )


@dataclasses.dataclass
class ClusteringTask(_LabelledTask):
    type: ClassVar[str] = "Clustering"

    def _evaluate_dim(self, encode_fn, dim):
        emb = _encode(encode_fn, self.texts, self.prompt or self.type, dim)
        return metrics.clustering_scores(emb, self.labels)

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        rows = [{"text": t, "label": y} for t, y in zip(self.texts, self.labels, strict=True)]
        _write_jsonl(folder / "test.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> ClusteringTask:
        texts, labels = cls._read(_find(folder, "test.jsonl"))
        return cls(name=name, texts=texts, labels=labels, **options)


@dataclasses.dataclass
class SummarizationTask(Task):
    """Per source text: human summaries, machine summaries and the machine summaries' gold
    relevance (MTEB SummEval layout)."""

    type: ClassVar[str] = "Summarization"
    human_summaries: Sequence[Sequence[str]] = ()
    machine_summaries: Sequence[Sequence[str]] = ()
    relevance: Sequence[Sequence[float]] = ()
    prompt: str | None = None

    def _evaluate_dim(self, encode_fn, dim):
        p = self.prompt or self.type

        def encode_groups(groups):
            flat = [t for g in groups for t in g]
            emb = _encode(encode_fn, flat, p, dim)
            return np.split(emb, np.cumsum([len(g) for g in groups])[:-1])

        return metrics.summarization_scores(
            encode_groups(self.machine_summaries),
            encode_groups(self.human_summaries),
            self.relevance,
        )

    def save(self, folder):
        folder = Path(folder)
        self._write_meta(folder, **({"prompt": self.prompt} if self.prompt else {}))
        rows = zip(self.human_summaries, self.machine_summaries, self.relevance, strict=True)
        _write_jsonl(
            folder / "test.jsonl",
            [
                {"human_summaries": list(h), "machine_summaries": list(m), "relevance": list(r)}
                for h, m, r in rows
            ],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> SummarizationTask:
        human, machine, relevance = [], [], []
        for where, obj in _read_jsonl(_find(folder, "test.jsonl")):
            human.append(_get(obj, "human_summaries", where, "texts"))
            machine.append(_get(obj, "machine_summaries", where, "texts"))
            relevance.append(_get(obj, "relevance", where, "numbers"))
            if len(relevance[-1]) != len(machine[-1]):
                raise TaskDataError(
                    f"{len(relevance[-1])} scores for {len(machine[-1])} machine summaries",
                    where=where,
                    field="relevance",
                )
        return cls(
            name=name,
            human_summaries=human,
            machine_summaries=machine,
            relevance=relevance,
            **options,
        )


TASK_TYPES: dict[str, type[Task]] = {
    cls.type: cls
    for cls in (
        RetrievalTask,
        RerankingTask,
        STSTask,
        PairClassificationTask,
        ClassificationTask,
        ClusteringTask,
        BitextMiningTask,
        SummarizationTask,
    )
}

# Options task.json may set, per type (everything else in task.json is an error).
_OPTIONS = {
    "Retrieval": {"query_prompt": "str", "k_values": "ints"},
    "Reranking": {"query_prompt": "str", "k_values": "ints"},
    "Classification": {"prompt": "str", "samples_per_label": "int|null", "n_experiments": "int"},
}


def load_task(folder: str | os.PathLike, task_type: str | None = None) -> Task:
    """Reads a task folder (layout in the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"task folder not found: {folder}")
    meta_path = folder / "task.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TaskDataError(
                f"invalid JSON ({e.msg})", where=f"task.json line {e.lineno}"
            ) from e
        if not isinstance(meta, dict):
            raise TaskDataError("expected a JSON object", where="task.json")
    task_type = task_type or meta.pop("type", None)
    meta.pop("type", None)
    if task_type is None:
        if _find(folder, "corpus.jsonl", required=False) is None:
            raise TaskDataError(
                'no "type" (and no corpus.jsonl to read it as BEIR retrieval)', where=str(meta_path)
            )
        has_candidates = _find(folder, "candidates.jsonl", required=False) is not None
        task_type = "Reranking" if has_candidates else "Retrieval"
    if task_type not in TASK_TYPES:
        raise TaskDataError(
            f"unknown task type {task_type!r}; one of {', '.join(TASK_TYPES)}",
            where="task.json",
            field="type",
        )
    name = meta.pop("name", folder.name)
    if not isinstance(name, str) or not name:
        raise TaskDataError("expected a non-empty string", where="task.json", field="name")
    allowed = _OPTIONS.get(task_type, {"prompt": "str"})
    for key, value in meta.items():
        kind = allowed.get(key)
        ok = (
            (kind == "str" and isinstance(value, str) and value)
            or (
                kind == "ints"
                and isinstance(value, list)
                and value
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
            or (
                kind in ("int", "int|null")
                and isinstance(value, int)
                and not isinstance(value, bool)
                and value > 0
            )
            or (kind == "int|null" and value is None)
        )
        if not ok:
            why = (
                f"not an option of {task_type} tasks"
                if kind is None
                else f"expected {kind}, got {value!r:.60}"
            )
            raise TaskDataError(why, where="task.json", field=key)
    return TASK_TYPES[task_type].load(folder, name, **meta)


# --------------------------------------------------------------------------------------------
# Built-in tasks (real text shipped with Python and the project's dependencies)
# --------------------------------------------------------------------------------------------


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")


_STDLIB_SKIP = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages",
    "dist-packages", "distutils", "pydoc_data", "__pycache__", "lib-dynload", "venv", "__phello__",
}  # fmt: skip


@lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[tuple[str, str, str], ...]:
    """(top-level module, qualified function name, docstring summary) for every public function
    or method of the running Python's standard library whose docstring's first paragraph is
    20-300 characters. Sorted; identical summaries found in different modules are dropped."""
    import ast
    import inspect
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    rows: list[tuple[str, str, str]] = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in _STDLIB_SKIP or p.startswith(("test", "config-")) for p in parts[:-1]):
            continue
        top = parts[0][:-3] if len(parts) == 1 else parts[0]
        if top.startswith("_") or (parts[-1].startswith("_") and parts[-1] != "__init__.py"):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        module = ".".join(parts)[:-3]

        def visit(node, prefix, top=top, module=module):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(child)
                    if child.name.startswith("_") or not doc:
                        continue
                    summary = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
                    if 20 <= len(summary) <= 300:
                        rows.append((top, f"{module}:{prefix}{child.name}", summary))

        visit(tree, "")
    owners: dict[str, set[str]] = {}
    for top, _, summary in rows:
        owners.setdefault(summary, set()).add(top)
    seen: set[str] = set()
    out = []
    for row in sorted(rows):
        if len(owners[row[2]]) == 1 and row[2] not in seen:
            seen.add(row[2])
            out.append(row)
    return tuple(out)


def _stdlib_labelled(n_labels: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    rows = stdlib_docstrings()
    counts: dict[str, int] = {}
    for top, _, _ in rows:
        counts[top] = counts.get(top, 0) + 1
    labels = sorted(sorted(counts), key=lambda m: -counts[m])[:n_labels]
    return [r for r in rows if r[0] in labels], labels


def stdlib_docstring_classification(n_labels: int = 12) -> ClassificationTask:
    """Which standard-library package (asyncio, logging, email, ...) does a function's docstring
    summary come from? The `n_labels` packages with the most documented functions; functions are
    split 1:2 into train and test by a hash of their qualified name."""
    rows, _ = _stdlib_labelled(n_labels)
    train = [r for r in rows if _stable_hash(r[1]) % 3 == 0]
    test = [r for r in rows if _stable_hash(r[1]) % 3 != 0]
    return ClassificationTask(
        name="stdlib-docstring-classification",
        texts=[r[2] for r in test],
        labels=[r[0] for r in test],
        train_texts=[r[2] for r in train],
        train_labels=[r[0] for r in train],
    )


def stdlib_docstring_clustering(n_labels: int = 12) -> ClusteringTask:
    """Cluster the standard library's function docstring summaries by package (the same
    packages as the classification task, its test split)."""
    rows, _ = _stdlib_labelled(n_labels)
    rows = [r for r in rows if _stable_hash(r[1]) % 3 != 0]
    return ClusteringTask(
        name="stdlib-docstring-clustering", texts=[r[2] for r in rows], labels=[r[0] for r in rows]
    )


def humanize_bitext(min_pairs: int = 40) -> BitextMiningTask:
    """English <-> translation mining over the message catalogues that `humanize` (a dependency
    of orbax-checkpoint) ships: one subset per language with at least `min_pairs` usable pairs.
    Pairs whose translation equals the English or repeats within a language are dropped."""
    import gettext
    import importlib.util

    spec = importlib.util.find_spec("humanize")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "humanize-bitext needs the `humanize` package (installed with orbax)"
        )
    locale_dir = Path(next(iter(spec.submodule_search_locations))) / "locale"
    s1, s2, subsets = [], [], []
    for mo in sorted(locale_dir.glob("*/LC_MESSAGES/humanize.mo")):
        lang = mo.parts[-3]
        with open(mo, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # msgid -> msgstr (plurals: (id, n))
        pairs: dict[str, str] = {}
        for key, translated in catalog.items():
            english = key[0] if isinstance(key, tuple) else key
            if isinstance(key, tuple) and key[1] != 0:
                continue
            if english and translated.strip() and translated.strip() != english.strip():
                pairs.setdefault(english, translated)
        counts: dict[str, int] = {}
        for t in pairs.values():
            counts[t] = counts.get(t, 0) + 1
        pairs = {e: t for e, t in pairs.items() if counts[t] == 1}
        if len(pairs) < min_pairs:
            continue
        for english in sorted(pairs):
            s1.append(english)
            s2.append(pairs[english])
            subsets.append(f"en-{lang}")
    if not s1:
        raise FileNotFoundError(f"no humanize catalogue with >= {min_pairs} pairs in {locale_dir}")
    return BitextMiningTask(name="humanize-bitext", sentence1=s1, sentence2=s2, subsets=subsets)


def default_cache_dir() -> Path:
    """Where built-in tasks are built: $EMBEDDINGGEMMA_JAX_CACHE or ~/.cache/embeddinggemma-jax."""
    root = os.environ.get("EMBEDDINGGEMMA_JAX_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "embeddinggemma-jax"


def stdlib_code_search(build_dir: str | os.PathLike | None = None, **build_kwargs) -> RetrievalTask:
    """Code search over the held-out packages of the standard-library dataset
    (`embeddinggemma_jax.data.stdlib`, the quickstart's training data): queries are docstring
    summaries, documents are function sources titled by their module; the query prompt is the
    one training uses (`stdlib.TASK`). Built once into `build_dir` (default: the cache dir) with
    `build_kwargs` (default: the builder's defaults, i.e. the quickstart's split)."""
    from embeddinggemma_jax.data import stdlib

    build_dir = Path(build_dir) if build_dir is not None else default_cache_dir() / "stdlib"
    stdlib.build(build_dir, **build_kwargs)
    task = load_task(build_dir / "beir", task_type="Retrieval")
    task.name = "stdlib-code-search"
    task.query_prompt = stdlib.TASK
    return task


BUILTIN_TASKS: dict[str, Callable[[], Task]] = {
    "stdlib-code-search": stdlib_code_search,
    "stdlib-docstring-classification": stdlib_docstring_classification,
    "stdlib-docstring-clustering": stdlib_docstring_clustering,
    "humanize-bitext": humanize_bitext,
}


def get_task(spec: str | os.PathLike) -> Task:
    """A built-in task by name, or a task folder by path."""
    if isinstance(spec, str) and spec in BUILTIN_TASKS:
        return BUILTIN_TASKS[spec]()
    if Path(spec).is_dir():
        return load_task(spec)
    raise KeyError(
        f"unknown task {str(spec)!r}: not a folder, nor a built-in task "
        f"({', '.join(sorted(BUILTIN_TASKS))})"
    )
