"""What every dataset builder shares: unit splits, seeded caps, BM25 negatives, the cached build."""

import json

import pytest

from embeddinggemma_jax.data import building


def test_split_units_holds_out_whole_units_within_their_share():
    sizes = {f"u{i}": s for i, s in enumerate([40, 3, 7, 12, 5, 9, 1, 2, 8, 13])}
    split = building.split_units(sizes, 0.1, 0.15, seed=0)
    assert split == building.split_units(sizes, 0.1, 0.15, seed=0)
    assert set(split) == set(sizes) and set(split.values()) == {"train", "dev", "test"}
    assert split["u0"] == "train"  # the largest unit always trains
    total = sum(sizes.values())
    for name, fraction in (("dev", 0.1), ("test", 0.15)):
        assert 0 < sum(sizes[u] for u, s in split.items() if s == name) <= fraction * total
    assert any(building.split_units(sizes, 0.1, 0.15, seed=s) != split for s in range(1, 5))
    # One unit larger than a share does not swallow it; three units always give three splits.
    assert sorted(building.split_units({"a": 1, "b": 1, "c": 100}, 0.1, 0.1, 0).values()) == [
        "dev",
        "test",
        "train",
    ]
    with pytest.raises(ValueError, match="three units"):
        building.split_units({"a": 1, "b": 2}, 0.1, 0.1, 0)
    with pytest.raises(ValueError):
        building.split_units(sizes, 0.5, 0.5, 0)


def test_take_is_a_seeded_subset_in_the_original_order():
    items = [f"x{i}" for i in range(50)]
    a = building.take(items, 10, 3, key=str)
    assert (
        len(a) == 10 and a == sorted(a, key=items.index) and a == building.take(items, 10, 3, str)
    )
    assert a != building.take(items, 10, 4, str)
    assert building.take(items, None, 0, str) == items == building.take(items, 99, 0, str)


def test_bm25_negatives_skip_the_excluded_and_fill_at_random():
    docs = [["red", "apple"], ["green", "apple"], ["red", "car"], ["blue", "sky"], ["sea"]]
    queries = [["red", "apple"], ["sky", "zzz"]]
    negatives = building.bm25_negatives(queries, docs, [{0}, {3}], 3, seed=0)
    assert negatives[0][:2] in ([1, 2], [2, 1]) and 0 not in negatives[0]  # lexical hits first
    assert 3 not in negatives[1] and len(set(negatives[1])) == 3  # no hit: seeded random fill
    assert negatives == building.bm25_negatives(queries, docs, [{0}, {3}], 3, seed=0)
    with pytest.raises(ValueError, match="too few"):
        building.bm25_negatives(queries, docs, [{0, 1, 2}, {3}], 3, seed=0)


def test_cached_build_replaces_the_output_only_when_complete(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        for name in ("train", "dev", "test"):
            (tmp / f"{name}.jsonl").write_text("")
            (tmp / name).mkdir(exist_ok=True)
        return {"splits": {}}

    out = tmp_path / "ds"
    first = building.cached_build(out, {"k": 1}, build)
    assert not first.cached and first.train == out / "train.jsonl" and first.dev_task == out / "dev"
    assert json.loads((out / "manifest.json").read_text())["key"] == {"k": 1}
    assert building.cached_build(out, {"k": 1}, build).cached and len(calls) == 1
    assert not building.cached_build(out, {"k": 2}, build).cached and len(calls) == 2

    def broken(tmp):
        (tmp / "train.jsonl").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        building.cached_build(out, {"k": 3}, broken)
    # The previous complete build is still there, and no temporary directory is left.
    assert (out / "train.jsonl").read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_installed_dir_finds_a_package_folder_without_importing_it():
    from embeddinggemma_jax.errors import UserError

    json_dir = building.installed_dir("json", marker="decoder.py", missing="unused")
    assert (json_dir / "decoder.py").is_file()
    for package, marker in (("no_such_package_here", None), ("json", "no_such_file.py")):
        with pytest.raises(UserError, match="pip install it"):
            building.installed_dir(package, marker=marker, missing="pip install it")


def test_distinct_queries_ask_once_per_key_and_judge_all_its_documents():
    items = [("a", "first", "d1"), ("b", "other", "d2"), ("a", "again", "d3")]
    queries, qrels = building.distinct_queries(
        items, key=lambda r: r[0], text=lambda r: r[1], doc_id=lambda r: r[2],
        query_id=lambda r, n: f"q{n}",
    )  # fmt: skip
    assert queries == {"q0": "first", "q1": "other"}
    assert qrels == {"q0": {"d1": 1, "d3": 1}, "q1": {"d2": 1}}
