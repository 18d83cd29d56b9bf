"""Evaluation task types: what each task holds, how it is scored, and its folder layout.

Reading the files is `eval.files`; finding a task by name or folder is `eval.registry`; the
built-in tasks are `eval.builtin`; running tasks on a model is `eval.runner`.

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
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embeddinggemma_jax.eval import metrics
from embeddinggemma_jax.eval.files import (
    TaskDataError,
    check_labels,
    find_file,
    get_field,
    read_ided,
    read_qrels,
    read_records,
)
from embeddinggemma_jax.readers import write_jsonl
from embeddinggemma_jax.text.prompts import apply_document_prompts

__all__ = [
    "TASK_TYPES",
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
]

EncodeFn = Callable[[Sequence[str], "str | None", int], np.ndarray]
Results = dict[int, dict[str, float]]


# --------------------------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------------------------


def _encode(encode_fn: EncodeFn, texts: Sequence[str], prompt_name: str | None, dim) -> np.ndarray:
    """[len(texts), dim] float32; each distinct text is encoded once (an STS task over N documents
    pairs each of them with many others)."""
    unique = list(dict.fromkeys(texts))
    emb = np.asarray(encode_fn(unique, prompt_name=prompt_name, dim=dim))
    if emb.ndim != 2 or emb.shape[0] != len(unique) or (dim is not None and emb.shape[1] != dim):
        raise ValueError(
            f"encode_fn returned shape {emb.shape} for {len(unique)} texts at dim={dim} "
            f"(prompt_name={prompt_name!r})"
        )
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"encode_fn returned NaN/inf (prompt_name={prompt_name!r}, dim={dim})")
    if len(unique) < len(texts):
        row = {t: i for i, t in enumerate(unique)}
        emb = emb[[row[t] for t in texts]]
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
        write_jsonl(
            folder / "corpus.jsonl",
            [{"_id": i, "title": t, "text": x} for i, (t, x) in self.corpus.items()],
        )
        write_jsonl(
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
        corpus = read_ided(find_file(folder, "corpus.jsonl"), title=True)
        queries = read_ided(find_file(folder, "queries.jsonl"), title=False)
        queries = {k: text for k, (_, text) in queries.items()}
        return corpus, queries, read_qrels(folder, set(queries))

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
        write_jsonl(
            folder / "candidates.jsonl",
            [{"query-id": q, "corpus-ids": list(c)} for q, c in self.candidates.items()],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> RerankingTask:
        corpus, queries, qrels = cls._read_parts(folder)
        candidates: dict[str, list[str]] = {}
        for where, obj in read_records(find_file(folder, "candidates.jsonl")):
            qid = get_field(obj, "query-id", where, "id")
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
class _ValuedPairTask(_PairTask):
    """A pair task whose test.jsonl rows carry one value per pair (a score, a label)."""

    # (attribute, test.jsonl key, `get_field` kind) of the value
    _value: ClassVar[tuple[str, str, str]]

    def save(self, folder):
        attr, key, _ = self._value
        folder = Path(folder)
        self._write_meta(folder, **self._options())
        rows = zip(self.sentence1, self.sentence2, getattr(self, attr), strict=True)
        write_jsonl(
            folder / "test.jsonl",
            [{"sentence1": a, "sentence2": b, key: v} for a, b, v in rows],
        )
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> _ValuedPairTask:
        attr, key, kind = cls._value
        s1, s2, values = [], [], []
        path = find_file(folder, "test.jsonl")
        for where, obj in read_records(path):
            s1.append(get_field(obj, "sentence1", where, "text"))
            s2.append(get_field(obj, "sentence2", where, "text"))
            values.append(get_field(obj, key, where, kind))
        cls._check(path, values)
        return cls(name=name, sentence1=s1, sentence2=s2, **{attr: values}, **options)

    @classmethod
    def _check(cls, path: Path, values: list) -> None:
        """Raises `TaskDataError` if the values as a whole are unusable."""


@dataclasses.dataclass
class STSTask(_ValuedPairTask):
    type: ClassVar[str] = "STS"
    _value: ClassVar[tuple[str, str, str]] = ("scores", "score", "number")
    scores: Sequence[float] = ()

    def _evaluate_dim(self, encode_fn, dim):
        return metrics.sts_scores(*self._encode_pairs(encode_fn, dim), self.scores)


@dataclasses.dataclass
class PairClassificationTask(_ValuedPairTask):
    type: ClassVar[str] = "PairClassification"
    _value: ClassVar[tuple[str, str, str]] = ("labels", "label", "binary")
    labels: Sequence[int] = ()

    def _evaluate_dim(self, encode_fn, dim):
        return metrics.pair_classification_scores(*self._encode_pairs(encode_fn, dim), self.labels)

    @classmethod
    def _check(cls, path: Path, values: list) -> None:
        if 1 not in values:
            raise TaskDataError("no pair has label 1", where=str(path), field="label")


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
        write_jsonl(folder / "test.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> BitextMiningTask:
        s1, s2, subsets = [], [], []
        for where, obj in read_records(find_file(folder, "test.jsonl")):
            s1.append(get_field(obj, "sentence1", where, "text"))
            s2.append(get_field(obj, "sentence2", where, "text"))
            subsets.append(get_field(obj, "subset", where, "text", default="default"))
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
        for where, obj in read_records(path):
            texts.append(get_field(obj, "text", where, "text"))
            labels.append(get_field(obj, "label", where, "label"))
        check_labels(labels, str(path))
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
            write_jsonl(folder / f"{split}.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> ClassificationTask:
        train_texts, train_labels = cls._read(find_file(folder, "train.jsonl"))
        texts, labels = cls._read(find_file(folder, "test.jsonl"))
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
        write_jsonl(folder / "test.jsonl", rows)
        return folder

    @classmethod
    def load(cls, folder: Path, name: str, **options) -> ClusteringTask:
        texts, labels = cls._read(find_file(folder, "test.jsonl"))
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
        write_jsonl(
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
        for where, obj in read_records(find_file(folder, "test.jsonl")):
            human.append(get_field(obj, "human_summaries", where, "texts"))
            machine.append(get_field(obj, "machine_summaries", where, "texts"))
            relevance.append(get_field(obj, "relevance", where, "numbers"))
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
