"""The Grain pipeline: batch structure, prompts, buckets, sharding, exact resume, mesh placement."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from embeddinggemma_jax.data import DataConfig, DataPipeline, DatasetConfig, bucket_lengths
from embeddinggemma_jax.data.pipeline import pick_bucket
from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS, document_prompt

REPO = Path(__file__).resolve().parents[2]


class HashTokenizer:
    """Stand-in for text.tokenizer.Tokenizer: one id per whitespace word; remembers its inputs."""

    pad_id, bos_id, eos_id = 0, 2, 1

    def __init__(self):
        self.seen = []

    def encode(self, texts, max_length=None):
        self.seen.append(list(texts))
        out = []
        for text in texts:
            ids = [
                3 + int.from_bytes(hashlib.md5(w.encode()).digest()[:2], "little")
                for w in text.split()
            ]
            if max_length is not None:
                ids = ids[: max_length - 2]
            out.append(np.array([self.bos_id, *ids, self.eos_id], np.int32))
        return out


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


def pairs(n, prefix, negatives=0, teacher=False, words=lambda i: 1 + i % 9):
    rows = []
    for i in range(n):
        row = {
            "query": " ".join([f"{prefix}q{i}"] * words(i)),
            "positive": " ".join([f"{prefix}p{i}"] * (1 + (i * 7) % 23)),
        }
        if negatives:
            row["negatives"] = [f"{prefix}n{i}.{j}" for j in range(negatives + i % 2)]
        if i % 4 == 0:
            row["title"] = f"{prefix}title{i}"
        if i % 5 == 0:
            row["task"] = "STS"
        if teacher:
            row["teacher"] = {
                "query": [float(i), 1.0, 0.0],
                "positive": [0.0, float(i), 1.0],
                "negatives": [
                    [float(i), float(j), 2.0] for j in range(len(row.get("negatives", [])))
                ],
            }
        rows.append(row)
    return rows


@pytest.fixture
def two_datasets(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", pairs(37, "a", negatives=3))
    b = write_jsonl(tmp_path / "b.jsonl", pairs(23, "b", negatives=2, teacher=True))
    return (
        DatasetConfig(path=a, name="a", weight=2.0, num_negatives=3, task="Retrieval"),
        DatasetConfig(path=b, name="b", weight=1.0, num_negatives=2, teacher=True),
    )


def make_config(datasets, **kwargs):
    defaults = dict(
        global_batch_size=8, query_max_length=24, doc_max_length=20, min_bucket=4, seed=3
    )
    return DataConfig(datasets=tuple(datasets), **{**defaults, **kwargs})


def make_pipeline(config, process_index=0, process_count=1, tokenizer=None):
    return DataPipeline(
        config,
        tokenizer or HashTokenizer(),
        process_index=process_index,
        process_count=process_count,
    )


def leaves_equal(x, y):
    lx, tx = jax.tree.flatten(x)
    ly, ty = jax.tree.flatten(y)
    return tx == ty and all(
        np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype for a, b in zip(lx, ly)
    )


def test_bucket_lengths():
    assert bucket_lengths(100, 16) == (16, 32, 64, 100)
    assert bucket_lengths(64, 16) == (16, 32, 64)
    assert bucket_lengths(64, 20) == (32, 64)
    assert bucket_lengths(50, 16, buckets=(8, 24, 80)) == (8, 24, 50)
    assert [pick_bucket(n, (16, 32, 64, 100)) for n in (1, 16, 17, 64, 65, 100)] == [
        16,
        16,
        32,
        64,
        100,
        100,
    ]
    with pytest.raises(ValueError):
        pick_bucket(101, (16, 32, 64, 100))


def test_batch_structure_and_bucket_padding(two_datasets):
    # Small batches of varied lengths, so several buckets occur.
    config = make_config(two_datasets, global_batch_size=2, query_max_length=64, doc_max_length=40)
    pipeline = make_pipeline(config)
    q_buckets = bucket_lengths(config.query_max_length, config.min_bucket)
    d_buckets = bucket_lengths(config.doc_max_length, config.min_bucket)
    seen_buckets = set()
    for step in range(16):
        batch = pipeline.batch(step)
        d = batch["dataset"]
        dataset = config.datasets[d]
        m = dataset.num_negatives
        b = config.global_batch_size
        q, p = batch["query"], batch["positive"]
        assert q["tokens"].dtype == np.int32 and q["mask"].dtype == bool
        assert q["tokens"].shape[0] == p["tokens"].shape[0] == b
        tq, td = q["tokens"].shape[1], p["tokens"].shape[1]
        assert batch["negatives"]["tokens"].shape == batch["negatives"]["mask"].shape == (b, m, td)
        # The bucket is the smallest that holds the longest row of the role (positives and negatives share).
        assert tq == pick_bucket(int(q["mask"].sum(1).max()), q_buckets)
        doc_lengths = np.concatenate([p["mask"].sum(1), batch["negatives"]["mask"].sum(2).ravel()])
        assert td == pick_bucket(int(doc_lengths.max()), d_buckets)
        seen_buckets.add((tq, td))
        for role in (q, p, batch["negatives"]):
            tokens, mask = (
                role["tokens"].reshape(-1, role["tokens"].shape[-1]),
                role["mask"].reshape(-1, role["mask"].shape[-1]),
            )
            lengths = mask.sum(1)
            # Right padding with pad id 0; BOS first, EOS last real token.
            assert np.array_equal(mask, np.arange(mask.shape[1])[None] < lengths[:, None])
            assert np.all(tokens[~mask] == 0) and np.all(tokens[:, 0] == 2)
            assert np.all(tokens[np.arange(len(tokens)), lengths - 1] == 1)
        assert batch["query_ids"].shape == batch["positive_ids"].shape == (b,)
        assert batch["query_ids"].dtype == np.int32
        assert ("teacher" in batch) == dataset.teacher
        if dataset.teacher:
            assert batch["teacher"]["query"].shape == (b, 3) and batch["teacher"][
                "negatives"
            ].shape == (b, m, 3)
            assert batch["teacher"]["query"].dtype == np.float32
    assert len(seen_buckets) > 1  # the data's lengths vary, so buckets do too
    assert {pipeline.batch(s)["dataset"] for s in range(16)} == {0, 1}


def test_no_negatives_key_without_negatives(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", pairs(10, "p", negatives=2))
    batch = make_pipeline(make_config([DatasetConfig(path=path)], global_batch_size=4)).batch(0)
    assert "negatives" not in batch and "teacher" not in batch


def test_prompts_titles_and_truncation(tmp_path):
    rows = pairs(6, "x", negatives=1)
    rows[0]["query"] = " ".join(["long"] * 100)
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    config = make_config(
        [DatasetConfig(path=path, num_negatives=1, task="Clustering")],
        global_batch_size=6,
        shuffle=False,
    )
    tokenizer = HashTokenizer()
    batch = make_pipeline(config, tokenizer=tokenizer).batch(0)
    queries, docs = tokenizer.seen
    expected_queries = [DEFAULT_PROMPTS[r.get("task", "Clustering")] + r["query"] for r in rows]
    assert queries == expected_queries
    assert docs[:6] == [document_prompt(r.get("title")) + r["positive"] for r in rows]
    assert docs[6:] == [document_prompt(None) + r["negatives"][0] for r in rows]
    # Truncated to the role's max length, still ending with EOS.
    assert batch["query"]["mask"][0].sum() == config.query_max_length
    assert batch["query"]["tokens"][0, config.query_max_length - 1] == 1
    assert batch["query"]["tokens"].shape[1] == config.query_max_length


def test_identity_hashes(tmp_path):
    rows = [
        {"query": "same", "positive": "d1"},
        {"query": "same", "positive": "d2"},
        {"query": "other", "positive": "d1", "positive_id": "doc-1"},
        {"query": "x", "positive": "d3", "query_id": 5, "positive_id": "doc-1"},
    ]
    path = write_jsonl(tmp_path / "ids.jsonl", rows)
    batch = make_pipeline(
        make_config([DatasetConfig(path=path)], global_batch_size=4, shuffle=False)
    ).batch(0)
    q, p = batch["query_ids"].tolist(), batch["positive_ids"].tolist()
    assert q[0] == q[1] and len({q[0], q[2], q[3]}) == 3
    assert p[2] == p[3] and len({p[0], p[1], p[2]}) == 3
    # Stable across processes and runs: a fresh pipeline (and a different process share) agrees.
    again = make_pipeline(
        make_config([DatasetConfig(path=path)], global_batch_size=4, shuffle=False), 1, 2
    )
    assert again.batch(0)["query_ids"].tolist() == q[2:]


def test_teacher_values_follow_the_records(tmp_path):
    rows = pairs(8, "t", negatives=2, teacher=True)
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    config = make_config(
        [DatasetConfig(path=path, num_negatives=2, teacher=True)],
        global_batch_size=8,
        shuffle=False,
    )
    batch = make_pipeline(config).batch(0)
    np.testing.assert_array_equal(
        batch["teacher"]["query"], np.array([r["teacher"]["query"] for r in rows], np.float32)
    )
    np.testing.assert_array_equal(
        batch["teacher"]["negatives"],
        np.array([r["teacher"]["negatives"][:2] for r in rows], np.float32),
    )


@pytest.mark.parametrize(
    "num_records, global_batch, processes", [(32, 8, 4), (30, 6, 3), (13, 4, 2)]
)
def test_process_shards_are_disjoint_and_cover(tmp_path, num_records, global_batch, processes):
    path = write_jsonl(tmp_path / "s.jsonl", pairs(num_records, "s"))
    config = make_config([DatasetConfig(path=path)], global_batch_size=global_batch)
    whole = make_pipeline(config)
    shards = [make_pipeline(config, p, processes) for p in range(processes)]
    steps = -(-2 * num_records // global_batch)  # two epochs and a bit
    stream = []
    for step in range(steps):
        _, expected = whole.records(step)
        parts = [shard.records(step)[1] for shard in shards]
        assert all(len(part) == global_batch // processes for part in parts)
        # The processes' shares are disjoint and together are exactly the global batch.
        assert [r.where for part in parts for r in part] == [r.where for r in expected]
        stream += [r.where for r in expected]
    # Each epoch visits every record once, in a new order.
    first, second = stream[:num_records], stream[num_records : 2 * num_records]
    assert (
        sorted(first)
        == sorted(second)
        == sorted(f"{path} line {i + 1}" for i in range(num_records))
    )
    assert first != second


def test_resume_yields_exactly_the_next_batches(two_datasets, tmp_path):
    config = make_config(two_datasets)
    it = make_pipeline(config).iterator()
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    assert state["step"] == 7
    expected = [next(it) for _ in range(5)]

    resumed = make_pipeline(config).iterator()  # fresh pipeline, as after a restart
    resumed.set_state(state)
    assert all(leaves_equal(e, next(resumed)) for e in expected)
    assert resumed.get_state()["step"] == 12

    started = make_pipeline(config).iterator(start_step=7)
    assert leaves_equal(expected[0], next(started))

    # Through Grain's Orbax checkpoint handler, as the trainer's CheckpointManager would do it.
    from etils import epath
    from grain.checkpoint import CheckpointHandler

    handler = CheckpointHandler()
    it2 = make_pipeline(config).iterator(start_step=7)
    handler.save(epath.Path(tmp_path), item=it2)
    restored = handler.restore(epath.Path(tmp_path), item=make_pipeline(config).iterator())
    assert all(leaves_equal(e, next(restored)) for e in expected)


def test_resume_refuses_a_different_pipeline(two_datasets):
    state = make_pipeline(make_config(two_datasets)).iterator(start_step=3).get_state()
    other = make_pipeline(make_config(two_datasets, seed=4)).iterator()
    with pytest.raises(ValueError, match="different data pipeline"):
        other.set_state(state)


def test_resume_after_the_data_moved(two_datasets, tmp_path):
    original = make_pipeline(make_config(two_datasets)).iterator(start_step=5)
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    moved = []
    for d in two_datasets:
        target = moved_dir / Path(d.path).name
        target.write_bytes(Path(d.path).read_bytes())
        moved.append(dataclasses.replace(d, path=str(target)))
    resumed = make_pipeline(make_config(moved)).iterator()
    resumed.set_state(original.get_state())
    for _ in range(3):
        assert leaves_equal(next(original), next(resumed))


def test_same_batches_with_threads_and_without(two_datasets):
    threaded = make_pipeline(make_config(two_datasets, num_threads=2)).iterator()
    direct = make_pipeline(make_config(two_datasets, num_threads=0))
    for step in range(6):
        assert leaves_equal(next(threaded), direct.batch(step))


def test_real_tokenizer_batch(tmp_path, gemma_tokenizer_model):
    from embeddinggemma_jax.text.tokenizer import Tokenizer

    tokenizer = Tokenizer(gemma_tokenizer_model)
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [{"query": "how to sort a list", "positive": "sorted(xs)", "title": "Sorting"}],
    )
    config = make_config(
        [DatasetConfig(path=path, task="InstructionRetrieval")],
        global_batch_size=1,
        query_max_length=64,
    )
    batch = make_pipeline(config, tokenizer=tokenizer).batch(0)
    q, p = batch["query"], batch["positive"]
    assert tokenizer.decode(q["tokens"][0][q["mask"][0]]) == tokenizer.decode(
        tokenizer.encode([DEFAULT_PROMPTS["InstructionRetrieval"] + "how to sort a list"])[0]
    )
    np.testing.assert_array_equal(
        p["tokens"][0][p["mask"][0]],
        tokenizer.encode([document_prompt("Sorting") + "sorted(xs)"])[0],
    )


PLACEMENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from embeddinggemma_jax.data import DataConfig, DataPipeline, DatasetConfig, batch_sharding, place_batch

    class Tok:
        pad_id = 0
        def encode(self, texts, max_length=None):
            return [np.array([2] + [3 + len(w) for w in t.split()][: max_length - 2] + [1], np.int32) for t in texts]

    assert jax.device_count() == 8, jax.devices()
    config = DataConfig(datasets=(DatasetConfig(path=sys.argv[1], num_negatives=2),), global_batch_size=16,
                        query_max_length=16, doc_max_length=16, min_bucket=4)
    host = DataPipeline(config, Tok()).batch(0)
    mesh = jax.make_mesh((4, 2, 1), ("data", "fsdp", "tensor"))
    sharding = batch_sharding(mesh, ("data", "fsdp"))
    batch = place_batch(host, sharding)
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        name = jax.tree_util.keystr(path)
        if isinstance(leaf, int):
            out[name] = leaf
            continue
        host_leaf = eval("host" + name)
        assert leaf.shape == host_leaf.shape and leaf.dtype == host_leaf.dtype, name
        assert np.array_equal(np.asarray(leaf), host_leaf), name
        assert leaf.sharding.spec[0] == ("data", "fsdp"), (name, leaf.sharding)
        assert len({s.device for s in leaf.addressable_shards}) == 8
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {2}, name
        out[name] = list(leaf.shape)
    print(json.dumps(out))
    """
)


def test_place_batch_on_an_8_device_mesh(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", pairs(20, "m", negatives=2))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, "-c", PLACEMENT_SCRIPT, path],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    assert shapes["['negatives']['tokens']"][:2] == [16, 2]
    assert shapes["['dataset']"] == 0
