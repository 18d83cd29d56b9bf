"""Definition -> headword pairs from the GCIDE dictionary wheel: filters, volume split, errors."""

import json

import pytest

from embeddinggemma_jax.data import definitions
from embeddinggemma_jax.data.records import parse_record
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.eval.registry import load_task

LETTERS = ["J", "K", "Q", "X", "Y", "Z"]  # the six smallest volumes


def test_usable_drops_cross_references_inflections_and_give_aways():
    assert definitions.usable("kaama", "The hartbeest of South Africa.", 3)
    assert not definitions.usable("kaama", "The hartbeest.", 3)  # too short
    assert not definitions.usable("sinsring", "Same as Banxring.", 2)
    assert not definitions.usable("santalin", "See Santalic acid, under Santalic.", 3)
    assert not definitions.usable("quickened", "imp. & p. p. of Quicken.", 3)
    assert not definitions.usable("striving", "a. & n. from Strive.", 3)
    assert not definitions.usable("sorriness", "The state of being full of sorriness.", 3)
    assert not definitions.usable("ice cream", "Cream with sugar, frozen like ice.", 3)
    assert definitions.usable("ice cream", "A frozen sweet food made of cream.", 3)


def test_malformed_volumes_are_located(tmp_path):
    path = tmp_path / "words_A.json"
    path.write_text('{"a": {"pos": []},\n "ab": {"pos": [}\n}')
    with pytest.raises(LocatedError, match=r"words_A.json line 2: invalid JSON"):
        definitions.read_volume(path)
    path.write_text(json.dumps({"ab": {"pos": [{"definitions": [{"text": 3}]}]}}))
    with pytest.raises(LocatedError, match=r"field 'ab.pos\[0\].definitions\[0\].text'"):
        definitions.read_volume(path)
    path.write_text(json.dumps({"ab": {"senses": []}}))
    with pytest.raises(LocatedError, match=r"words_A.json: field 'ab.pos': expected a list"):
        definitions.read_volume(path)
    with pytest.raises(definitions.UserError, match="no words_"):
        definitions.collect_pairs(tmp_path / "missing")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_a_real_slice_disjoint_by_volume_and_deterministic(tmp_path):
    kwargs = dict(letters=LETTERS, max_records=500, max_eval_records=120)
    built = definitions.build_definitions(tmp_path / "a", **kwargs)
    splits = {s: read_jsonl(getattr(built, s)) for s in ("train", "dev", "test")}
    assert len(splits["train"]) == 500 and 0 < len(splits["test"]) <= 120
    volumes = {s: set(v["volumes"]) for s, v in built.manifest["splits"].items()}
    assert set().union(*volumes.values()) <= set(LETTERS)
    assert not (volumes["train"] & volumes["dev"] or volumes["train"] & volumes["test"])
    assert not volumes["dev"] & volumes["test"]
    terms = {s: {r["positive"] for r in rows} for s, rows in splits.items()}
    queries = {s: {r["query"] for r in rows} for s, rows in splits.items()}
    assert not (terms["train"] & terms["dev"] or terms["train"] & terms["test"])
    assert not (queries["train"] & queries["dev"] or queries["train"] & queries["test"])
    for i, record in enumerate(splits["train"]):
        parse_record(record, where=f"train.jsonl line {i + 1}")
        assert next(c for c in record["positive"] if c.isalpha()).upper() in volumes["train"]
        assert len(record["negatives"]) == 3 and record["positive"] not in record["negatives"]
        assert set(record["negatives"]) <= terms["train"]
    for split in ("dev", "test"):
        task = load_task(getattr(built, f"{split}_task"))
        assert task.query_prompt == "Retrieval"
        assert {text for _, text in task.corpus.values()} == terms[split]
    definitions.build_definitions(tmp_path / "b", **kwargs)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "test/corpus.jsonl", "dev/qrels.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert definitions.build_definitions(tmp_path / "a", **kwargs).cached
