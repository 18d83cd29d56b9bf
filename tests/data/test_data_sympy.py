"""SymPy code search: docstring summary -> source, held out by subpackage."""

import ast
import json

import pytest

from embeddinggemma_jax.data import sympy_code
from embeddinggemma_jax.data.records import parse_record
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.eval.registry import load_task

SUBPACKAGES = ["logic", "sets", "crypto", "concrete", "categories", "strategies", "unify"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_a_real_slice_disjoint_by_subpackage_and_deterministic(tmp_path):
    kwargs = dict(subpackages=SUBPACKAGES, max_eval_records=60)
    built = sympy_code.build_sympy(tmp_path / "a", **kwargs)
    splits = {s: read_jsonl(getattr(built, s)) for s in ("train", "dev", "test")}
    units = {s: set(v["subpackages"]) for s, v in built.manifest["splits"].items()}
    assert set().union(*units.values()) <= set(SUBPACKAGES) and all(units.values())
    assert not (units["train"] & units["dev"] or units["train"] & units["test"])
    assert not units["dev"] & units["test"]
    for split, rows in splits.items():
        for i, record in enumerate(rows):
            parse_record(record, where=f"{split}.jsonl line {i + 1}")
            assert record["title"].split(".")[:2] in (["sympy", u] for u in units[split])
            assert record["task"] == "InstructionRetrieval"
            (function,) = ast.parse(record["positive"]).body  # one function, its docstring gone
            assert isinstance(function, ast.FunctionDef) and ast.get_docstring(function) is None
            assert len(record["negatives"]) == 3 and record["positive"] not in record["negatives"]
    assert len(splits["train"]) > 100 and 0 < len(splits["test"]) <= 60
    for split in ("dev", "test"):
        task = load_task(getattr(built, f"{split}_task"))
        assert {text for _, text in task.corpus.values()} == {r["positive"] for r in splits[split]}
    sympy_code.build_sympy(tmp_path / "b", **kwargs)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "dev/corpus.jsonl", "test/qrels.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sympy_code.build_sympy(tmp_path / "a", **kwargs).cached


def test_not_a_package_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a package directory"):
        sympy_code.build_sympy(tmp_path / "out", root=tmp_path)
