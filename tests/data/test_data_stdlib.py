"""The standard-library code-search builder: extraction, leak-free split, BM25 negatives, layouts."""

import json
import textwrap

import numpy as np
import pytest
from data.datalib import WordTokenizer

from embeddinggemma_jax.data import DataConfig, DataPipeline, DatasetConfig, open_source, stdlib

PACKAGES = [
    "json",
    "csv",
    "textwrap",
    "shlex",
    "heapq",
    "calendar",
    "difflib",
    "fnmatch",
    "string",
    "bisect",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("stdlib")
    manifest = stdlib.build(out, packages=PACKAGES, eval_fraction=0.3, num_negatives=3, seed=0)
    return out, manifest


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_extract_functions():
    source = textwrap.dedent(
        '''
        import functools

        class Box:
            @functools.lru_cache(maxsize=None)
            def area(self, scale=1):
                """Compute the scaled area of the box. More text here.

                Details that are not part of the summary.
                """

                # a comment
                w = self.w * scale
                h = self.h * scale
                return w * h

            def tiny(self):
                """Return the width of the box."""
                return self.w

            def test_area(self):
                """Check that the area is right."""
                assert self.area() == 1
                assert self.area(2) == 4
                assert self.area(3) == 9

        def undocumented(x):
            y = x + 1
            z = y * 2
            return z

        def signature(a, b):
            """signature(a, b) -> int"""
            c = a + b
            d = c * 2
            return d
        '''
    )
    functions = stdlib.extract_functions(source, "pkg.mod", min_body_lines=3)
    assert [f.id for f in functions] == ["pkg.mod:Box.area"]
    f = functions[0]
    assert f.summary == "Compute the scaled area of the box."
    assert f.package == "pkg" and f.module == "pkg.mod"
    assert f.code.startswith(
        "@functools.lru_cache(maxsize=None)\ndef area(self, scale=1):\n    # a comment"
    )
    assert '"""' not in f.code and "Details" not in f.code
    assert f.code.endswith("return w * h")


def test_summaries():
    assert stdlib.summarize("Split the string. Then more.") == "Split the string."
    assert (
        stdlib.summarize("Return the value of\nthe thing e.g. x.\n\nMore.")
        == "Return the value of the thing e.g. x."
    )
    assert stdlib.summarize("Return self.") is None  # too short to be a query
    assert stdlib.summarize("f(x, y) -> int\n\nDoes things.") is None


def test_module_discovery_skips_tests():
    modules = stdlib.module_files(stdlib.stdlib_root())
    names = [m for m, _ in modules]
    assert "json" in names and "json.decoder" in names and "email.parser" in names
    assert not [
        m
        for m in names
        if any(p in ("test", "tests", "idle_test") or p.startswith("test_") for p in m.split("."))
    ]
    assert not [m for m, path in modules if "site-packages" in str(path)]
    assert {
        m.split(".")[0] for m, _ in stdlib.module_files(stdlib.stdlib_root(), ["json", "csv"])
    } == {"json", "csv"}


def test_split_holds_out_whole_packages_without_leaks(built):
    out, manifest = built
    train, evaluation = read_jsonl(out / "train.jsonl"), read_jsonl(out / "eval.jsonl")
    assert len(train) > 20 and len(evaluation) > 10
    train_packages = {r["title"].split(".")[0] for r in train}
    eval_packages = {r["title"].split(".")[0] for r in evaluation}
    assert train_packages.isdisjoint(eval_packages)
    assert train_packages | eval_packages <= set(PACKAGES)
    assert {r["title"] for r in train}.isdisjoint({r["title"] for r in evaluation})
    # No eval function appears in training, as positive or as negative.
    train_code = {r["positive"] for r in train} | {n for r in train for n in r["negatives"]}
    assert not train_code & {r["positive"] for r in evaluation}
    assert {r["positive_id"] for r in train}.isdisjoint({r["positive_id"] for r in evaluation})
    # Negatives come from the record's own split.
    eval_code = {r["positive"] for r in evaluation}
    assert all(n in eval_code for r in evaluation for n in r["negatives"])
    assert manifest["splits"]["eval"]["packages"] == sorted(eval_packages)


def test_records_and_negatives(built):
    out, _ = built
    for split in ("train", "eval"):
        source = open_source(str(out / f"{split}.jsonl"))  # the schema validates
        rows = read_jsonl(out / f"{split}.jsonl")
        summaries = {}
        for r in rows:
            summaries.setdefault(r["query"].lower().rstrip("."), set()).add(r["positive"])
        assert len(source) == len(rows)
        assert len({r["positive"] for r in rows}) == len(rows)  # no duplicate functions
        for r in rows:
            assert r["task"] == stdlib.TASK and r["query_id"] == f"q:{r['positive_id']}"
            assert len(r["negatives"]) == 3 == len(set(r["negatives"]))
            same_summary = summaries[r["query"].lower().rstrip(".")]
            assert not same_summary & set(
                r["negatives"]
            )  # neither itself nor a same-summary function


def test_negatives_are_bm25_hits(built):
    """Mined negatives share more terms with the query than random functions do."""
    out, _ = built
    rows = read_jsonl(out / "train.jsonl")
    rng = np.random.default_rng(0)

    def overlap(query, code):
        q = set(stdlib.code_tokens(query))
        return len(q & set(stdlib.code_tokens(code))) / max(1, len(q))

    mined = np.mean([overlap(r["query"], n) for r in rows for n in r["negatives"]])
    random = np.mean(
        [
            overlap(r["query"], rows[int(rng.integers(len(rows)))]["positive"])
            for r in rows
            for _ in range(3)
        ]
    )
    assert mined > 2 * random


def test_beir_layout(built):
    out, manifest = built
    corpus = read_jsonl(out / "beir" / "corpus.jsonl")
    queries = read_jsonl(out / "beir" / "queries.jsonl")
    lines = (out / "beir" / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["query-id", "corpus-id", "score"]
    qrels = [line.split("\t") for line in lines[1:]]
    evaluation = read_jsonl(out / "eval.jsonl")
    assert {d["_id"] for d in corpus} == {r["positive_id"] for r in evaluation}
    assert all(set(d) == {"_id", "title", "text"} for d in corpus)
    assert all(set(q) == {"_id", "text"} for q in queries)
    query_ids, corpus_ids = {q["_id"] for q in queries}, {d["_id"] for d in corpus}
    assert len(query_ids) == len(queries) == len({q["text"].lower().rstrip(".") for q in queries})
    assert all(q in query_ids and c in corpus_ids and s == "1" for q, c, s in qrels)
    # Every eval function is relevant to exactly one query: the one with its summary.
    text_of = {q["_id"]: q["text"] for q in queries}
    summary_of = {r["positive_id"]: r["query"] for r in evaluation}
    assert sorted(c for _, c, _ in qrels) == sorted(corpus_ids)
    assert all(
        text_of[q].lower().rstrip(".") == summary_of[c].lower().rstrip(".") for q, c, _ in qrels
    )
    assert manifest["beir"] == {"corpus": len(corpus), "queries": len(queries), "qrels": len(qrels)}


def test_beir_folder_loads_as_a_retrieval_task(built):
    from embeddinggemma_jax.eval import RetrievalTask, load_task

    out, manifest = built
    task = load_task(out / "beir")
    assert isinstance(task, RetrievalTask)
    assert len(task.corpus) == manifest["beir"]["corpus"]
    assert len(task.queries) == manifest["beir"]["queries"]


def test_deterministic_and_cached(built, tmp_path):
    out, _ = built
    again = stdlib.build(
        tmp_path, packages=list(reversed(PACKAGES)), eval_fraction=0.3, num_negatives=3, seed=0
    )
    assert not again["cached"]
    for name in (
        "train.jsonl",
        "eval.jsonl",
        "beir/corpus.jsonl",
        "beir/queries.jsonl",
        "beir/qrels/test.tsv",
    ):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    stamp = (tmp_path / "train.jsonl").stat().st_mtime_ns
    cached = stdlib.build(tmp_path, packages=PACKAGES, eval_fraction=0.3, num_negatives=3, seed=0)
    assert cached["cached"] and (tmp_path / "train.jsonl").stat().st_mtime_ns == stamp
    other_seed = stdlib.build(
        tmp_path, packages=PACKAGES, eval_fraction=0.3, num_negatives=3, seed=1
    )
    assert not other_seed["cached"]


def test_cli(tmp_path, capsys):
    stdlib.main(
        [
            "--out",
            str(tmp_path),
            "--packages",
            "json,csv,shlex,heapq",
            "--eval-fraction",
            "0.3",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert "train" in printed and "eval" in printed and str(tmp_path) in printed
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["key"]["packages"] == ["csv", "heapq", "json", "shlex"]


def test_trains_through_the_pipeline(built):
    out, _ = built

    config = DataConfig(
        datasets=(DatasetConfig(path=str(out / "train.jsonl"), num_negatives=3),),
        global_batch_size=8,
        query_max_length=32,
        doc_max_length=64,
    )
    batch = DataPipeline(config, WordTokenizer(), process_index=0, process_count=1).batch(0)
    assert batch["negatives"]["tokens"].shape[:2] == (8, 3)


def test_dev_split_is_a_third_set_of_whole_packages(tmp_path):
    from embeddinggemma_jax.eval.registry import load_task

    manifest = stdlib.build(tmp_path, packages=PACKAGES, eval_fraction=0.2, dev_fraction=0.2)
    packages = {name: set(s["packages"]) for name, s in manifest["splits"].items()}
    assert sorted(packages) == ["dev", "eval", "train"] and all(packages.values())
    assert not (packages["dev"] & packages["train"] or packages["dev"] & packages["eval"])
    assert not packages["train"] & packages["eval"]
    dev = read_jsonl(tmp_path / "dev.jsonl")
    assert {r["title"].split(".")[0] for r in dev} <= packages["dev"]
    task = load_task(tmp_path / "dev")
    assert {text for _, text in task.corpus.values()} == {r["positive"] for r in dev}
    assert task.query_prompt == stdlib.TASK
