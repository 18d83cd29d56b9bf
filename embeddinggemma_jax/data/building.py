"""What every dataset builder shares: the output layout, the cache, the split, BM25 negatives.

A built dataset is one directory::

    train.jsonl, dev.jsonl, test.jsonl   training records (the `records` schema)
    dev/, test/                          retrieval tasks of the dev and test splits
                                         (`eval.tasks.RetrievalTask` folders: task.json,
                                         corpus.jsonl, queries.jsonl, qrels.tsv)
    manifest.json                        settings (the cache key), counts, build time

dev is for choosing (the mixture search), test is held out for reporting. The splits are made of
whole natural units (a message catalog, a subpackage, a dictionary volume), so nothing of a test
unit is trained on. The build is written to a temporary sibling directory that replaces the
output only when complete; a second call with the same settings returns the cached build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embeddinggemma_jax.cache import cache_dir
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.readers import write_jsonl  # building.write_jsonl for the builders

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True)
class DatasetPaths:
    """Where a built dataset lies: its JSONL splits, its dev/test retrieval tasks, its manifest.

    A split a dataset does not have is None (the stdlib set has a train and a test split only;
    evaluation-only builds have none).
    """

    root: Path
    manifest: Mapping[str, Any]
    cached: bool
    train: Path | None
    dev: Path | None
    test: Path | None
    dev_task: Path | None
    test_task: Path | None

    @classmethod
    def standard(cls, root: Path, manifest: Mapping[str, Any], cached: bool) -> DatasetPaths:
        """The paths of the layout in this module's docstring."""
        return cls(
            root, manifest, cached, root / "train.jsonl", root / "dev.jsonl",
            root / "test.jsonl", root / "dev", root / "test",
        )  # fmt: skip


def default_dir(name: str) -> Path:
    """The default output directory of dataset `name`: ``<cache>/data/<name>``."""
    return cache_dir("data", name)


def output_dir(name: str, out_dir: str | os.PathLike | None) -> Path:
    """`out_dir` as a path, or dataset `name`'s `default_dir` when None."""
    return default_dir(name) if out_dir is None else Path(out_dir)


def file_sha(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def installed_dir(package: str, *parts: str, marker: str | None = None, missing: str) -> Path:
    """The folder `parts` inside the installed `package` (it must hold the file `marker` when
    given), found without importing the package; `UserError(missing)` when it is not there."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
        if marker is None or (path / marker).is_file():
            return path
    raise UserError(missing)


def builder_key(version: int, *builder_files: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """A build's cache key: the builder's version and the source of its module files and of this
    one (an edit to any rebuilds), then the build's `options` in the order given."""
    return {
        "builder_version": version,
        "builder_sha": "".join(map(file_sha, builder_files)) + file_sha(__file__),
        **options,
    }


def hash_order(seed: int, name: str) -> bytes:
    """A sort key fixed by (seed, name): a deterministic shuffle that does not depend on the set."""
    return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()


def split_units(
    sizes: Mapping[str, int], dev_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """{unit: "train" | "dev" | "test"}: whole units, test first then dev, the rest train.

    Walking the units in hash order, a held-out split takes each unit that still fits in its
    share (``fraction x`` all items), so one large unit cannot swallow it; a split that nothing
    fits takes the smallest unit left. The largest unit always stays in train.
    """
    if not (0 < dev_fraction and 0 < test_fraction and dev_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 < dev, test fractions, sum < 1; got {dev_fraction}, {test_fraction}"
        )
    if len(sizes) < 3:
        raise ValueError(f"need at least three units to split, got {sorted(sizes)}")
    order = sorted(sizes, key=lambda u: hash_order(seed, u))
    total = sum(sizes.values())
    out: dict[str, str] = {max(order, key=lambda u: sizes[u]): "train"}
    for later, (split, fraction) in enumerate((("test", test_fraction), ("dev", dev_fraction))):
        spare = len(order) - len(out) - (1 - later)  # test leaves at least one unit for dev
        taken = 0
        for unit in order:
            if unit not in out and spare > 0 and taken + sizes[unit] <= fraction * total:
                out[unit] = split
                taken += sizes[unit]
                spare -= 1
        if taken == 0:
            out[min((u for u in order if u not in out), key=lambda u: sizes[u])] = split
    return {unit: out.get(unit, "train") for unit in order}


def take(items: Sequence, n: int | None, seed: int, key: Callable[[Any], str]) -> list:
    """At most `n` of `items` (all when None), chosen by hash order of `key`; original order kept."""
    if n is None or n >= len(items):
        return list(items)
    chosen = set(sorted(range(len(items)), key=lambda i: hash_order(seed, key(items[i])))[:n])
    return [x for i, x in enumerate(items) if i in chosen]


def bm25_tokens(text: str) -> list[str]:
    """The words BM25 indexes: lower-cased, of two letters or more, English stop words dropped."""
    from bm25s.stopwords import STOPWORDS_EN

    return [w for w in re.findall(r"\w+", text.lower()) if len(w) > 1 and w not in STOPWORDS_EN]


def bm25_negatives(
    query_tokens: Sequence[Sequence[str]],
    doc_tokens: Sequence[Sequence[str]],
    excluded: Sequence[set[int]],
    num_negatives: int,
    seed: int,
) -> list[list[int]]:
    """For query i, `num_negatives` doc indices: its top BM25 hits outside ``excluded[i]``.

    Zero-score hits are arbitrary, so when BM25 finds too few the rest are drawn at random
    (seeded) from the docs not excluded.
    """
    import bm25s

    n = len(doc_tokens)
    if num_negatives == 0:
        return [[] for _ in query_tokens]
    if n - max(len(e) for e in excluded) < num_negatives:
        raise ValueError(f"{n} documents are too few to mine {num_negatives} negatives each")
    logger = logging.getLogger("bm25s")
    level = logger.level
    logger.setLevel(logging.WARNING)  # it logs every empty query at INFO
    try:
        retriever = bm25s.BM25()
        retriever.index([list(t) or ["\0"] for t in doc_tokens], show_progress=False)
        k = min(n, num_negatives + max(len(e) for e in excluded) + 8)
        hits, scores = retriever.retrieve(
            [list(t) or ["\0"] for t in query_tokens], k=k, show_progress=False, n_threads=1
        )
    finally:
        logger.setLevel(level)
    rng = np.random.default_rng(seed)
    out = []
    for row, row_scores, skip in zip(hits.tolist(), scores.tolist(), excluded):
        chosen = [j for j, s in zip(row, row_scores) if s > 0 and j not in skip][:num_negatives]
        while len(chosen) < num_negatives:
            j = int(rng.integers(n))
            if j not in skip and j not in chosen:
                chosen.append(j)
        out.append(chosen)
    return out


def text_negatives(
    queries: Sequence[str],
    docs: Sequence[str],
    excluded: Sequence[set[int]],
    num_negatives: int,
    seed: int,
) -> list[list[int]]:
    """`bm25_negatives` of English texts, tokenized by `bm25_tokens`."""
    return bm25_negatives(
        [bm25_tokens(q) for q in queries],
        [bm25_tokens(d) for d in docs],
        excluded,
        num_negatives,
        seed,
    )


def save_retrieval(
    folder: Path,
    name: str,
    corpus: Mapping[str, tuple[str, str]],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    query_prompt: str,
) -> dict:
    """Writes one split's retrieval task (`RetrievalTask.save`); returns its counts."""
    from embeddinggemma_jax.eval.tasks import RetrievalTask

    task = RetrievalTask(
        name=name, corpus=corpus, queries=queries, qrels=qrels, query_prompt=query_prompt
    )
    task.save(folder)
    return {"corpus": len(task.corpus), "queries": len(task.queries)}


def distinct_queries(
    items: Iterable,
    key: Callable[[Any], Any],
    text: Callable[[Any], str],
    doc_id: Callable[[Any], str],
    query_id: Callable[[Any, int], str],
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """(queries, qrels) of retrieval over `items`: one query per distinct ``key(item)``, with the
    first such item's text and id (``query_id(item, number of queries so far)``); every item of
    the key makes its ``doc_id(item)`` relevant."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    query_of: dict[Any, str] = {}
    for item in items:
        k = key(item)
        if k not in query_of:
            query_of[k] = query_id(item, len(query_of))
            queries[query_of[k]] = text(item)
        qrels.setdefault(query_of[k], {})[doc_id(item)] = 1
    return queries, qrels


def text_retrieval(
    items: Sequence,
    doc: Callable[[Any], str],
    doc_prefix: str,
    key: Callable[[Any], Any],
    text: Callable[[Any], str],
    query_id: Callable[[Any, int], str],
) -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus, queries, qrels) where the documents are the distinct ``doc(item)`` texts (ids
    ``<doc_prefix>:<rank in sorted order>``, no title) and the queries `distinct_queries`'."""
    doc_ids = {d: f"{doc_prefix}:{i}" for i, d in enumerate(sorted({doc(x) for x in items}))}
    queries, qrels = distinct_queries(items, key, text, lambda x: doc_ids[doc(x)], query_id)
    return {i: ("", d) for d, i in doc_ids.items()}, queries, qrels


STANDARD_FILES = tuple(f"{s}.jsonl" for s in SPLITS) + ("dev", "test")


def cached_dir(
    out_dir: str | os.PathLike,
    key: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any]],
    files: Sequence[str],
    *,
    force: bool = False,
) -> tuple[Path, dict, bool]:
    """Runs ``build(tmp_dir)`` unless `out_dir` holds a build with the same `key` and `files`.

    `build` writes `files` into `tmp_dir` and returns the manifest's counts; the directory
    replaces `out_dir` only once it is complete. Returns (out_dir, manifest, cached).
    """
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("key") == dict(key) and all((out / f).exists() for f in files):
            return out, manifest, True
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        counts = dict(build(tmp))
        manifest = {
            "key": dict(key),
            "files": list(files),
            **counts,
            "build_seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, manifest, False


def cached_build(
    out_dir: str | os.PathLike,
    key: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any]],
    *,
    force: bool = False,
) -> DatasetPaths:
    """`cached_dir` for a dataset in this module's layout (`build` writes `STANDARD_FILES`)."""
    out, manifest, cached = cached_dir(out_dir, key, build, STANDARD_FILES, force=force)
    return DatasetPaths.standard(out, manifest, cached)


@dataclasses.dataclass(frozen=True)
class Splitting:
    """How `build_units` splits, caps and mines a dataset; each field is part of the cache key.

    max_records: cap on the train records (a seeded, deterministic subset; None: all).
    max_eval_records: cap on each of dev and test (records and retrieval queries).
    num_negatives: BM25 hard negatives per record.
    dev_fraction / test_fraction: share of the records held out, in whole units.
    seed: fixes the split, the caps and any random negative fill.
    """

    max_records: int | None = None
    max_eval_records: int | None = None
    num_negatives: int = 3
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class UnitDataset:
    """A dataset of records that come in natural units, built by `build_units`.

    ``records(items, num_negatives, seed)`` gives a split's training records (``<split>.jsonl``)
    and its counts; ``retrieval(items)`` the (corpus, queries, qrels) of its retrieval task (dev
    and test). An item whose `distinct` text an earlier split (train, then dev) has is dropped
    from the later one.
    """

    name: str
    version: int
    sources: tuple[str, ...]  # the builder's module files: an edit to one rebuilds
    task: str
    group: str
    unit: Callable[[Any], str]
    record_id: Callable[[Any], str]  # stable: orders the seeded caps
    records: Callable[[list, int, int], tuple[Iterable[dict], dict]]
    retrieval: Callable[[list], tuple[Mapping, Mapping, Mapping]]
    distinct: Callable[[Any], str] | None = None
    max_eval_records: int | None = None  # this dataset's default cap on dev and test
    manifest: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # more of its facts


def split_records(records: Sequence, dataset: UnitDataset, splitting: Splitting) -> dict[str, list]:
    """{split: its records}: whole units per `split_units`, each split capped (`take`)."""
    sizes: dict[str, int] = {}
    for r in records:
        sizes[dataset.unit(r)] = sizes.get(dataset.unit(r), 0) + 1
    s = splitting
    unit_split = split_units(sizes, s.dev_fraction, s.test_fraction, s.seed)
    out: dict[str, list] = {split: [] for split in SPLITS}
    for r in records:
        out[unit_split[dataset.unit(r)]].append(r)
    earlier: set[str] = set()
    for split in SPLITS:
        if dataset.distinct is not None:
            out[split] = [r for r in out[split] if dataset.distinct(r) not in earlier]
            earlier |= {dataset.distinct(r) for r in out[split]}
        cap = s.max_records if split == "train" else s.max_eval_records
        out[split] = take(out[split], cap, s.seed, dataset.record_id)
    return out


def build_units(
    dataset: UnitDataset,
    out_dir: str | os.PathLike | None,
    root: Path,
    options: Mapping[str, Any],
    collect: Callable[[], Sequence],
    *,
    force: bool = False,
    **splitting: Any,
) -> DatasetPaths:
    """Builds (or returns the cached) `dataset` from the records ``collect()`` reads under `root`.

    `out_dir` defaults to `default_dir`; `options` are the builder's own settings (the cache key
    holds them after `root`, then the `Splitting` fields, which `splitting` may set).
    """
    s = Splitting(**{"max_eval_records": dataset.max_eval_records, **splitting})
    key = builder_key(
        dataset.version,
        *dataset.sources,
        root=str(root.resolve()),
        **options,
        **dataclasses.asdict(s),
    )

    def build(tmp: Path) -> dict:
        counts = {}
        for split, items in split_records(collect(), dataset, s).items():
            records, counts[split] = dataset.records(items, s.num_negatives, s.seed)
            write_jsonl(tmp / f"{split}.jsonl", records)
            if split != "train":
                task = dataset.retrieval(items)
                name = f"{dataset.name}-{split}"
                counts[split]["task"] = save_retrieval(tmp / split, name, *task, dataset.task)
        about = {"name": dataset.name, "task": dataset.task, "group": dataset.group}
        return {**about, **dataset.manifest, "splits": counts}

    return cached_build(output_dir(dataset.name, out_dir), key, build, force=force)
