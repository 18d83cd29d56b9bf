"""STS and classification tasks from the annotated corpora in gensim's shipped test data."""

import shutil

import pytest

from embeddinggemma_jax.data import gensim_eval
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.eval.registry import load_task


def test_builds_loadable_sts_and_classification_tasks(tmp_path):
    built = gensim_eval.build_gensim_eval(tmp_path / "a")
    sts = load_task(built.root / "lee-sts")
    assert sts.type == "STS" and len(sts.scores) == 50 * 49 // 2
    assert all(0 <= s <= 1 for s in sts.scores) and len(set(sts.scores)) > 20
    assert any("£3,000" in text for text in sts.sentence1)  # decoded as the 8-bit text it is
    polarity = load_task(built.root / "pang-lee-polarity")
    assert polarity.type == "Classification"
    assert len(polarity.texts) == len(polarity.train_texts) == 100
    assert not set(polarity.texts) & set(polarity.train_texts)
    assert set(polarity.labels) == set(polarity.train_labels) == {"neg", "pos"}
    again = gensim_eval.build_gensim_eval(tmp_path / "b")
    for name in ("lee-sts/test.jsonl", "pang-lee-polarity/train.jsonl"):
        assert (built.root / name).read_bytes() == (again.root / name).read_bytes()
    assert gensim_eval.build_gensim_eval(tmp_path / "a").cached


def test_malformed_files_are_located(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(gensim_eval.gensim_data_dir(), root, ignore=lambda d, names: [
        n for n in names if n not in ("lee.cor", "similarities0-1.txt", "pang_lee_polarity.cor")
    ])  # fmt: skip
    sims = root / "similarities0-1.txt"
    lines = sims.read_text().splitlines()
    sims.write_text("\n".join(lines[:2] + ["0.5\t0.2"] + lines[3:]) + "\n")
    with pytest.raises(LocatedError, match=r"similarities0-1.txt line 3: expected 50 similarities"):
        gensim_eval.build_gensim_eval(tmp_path / "out", root=root)
    sims.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LocatedError, match=r"similarities0-1.txt: expected 50 rows"):
        gensim_eval.read_lee(root)
    polarity = root / "pang_lee_polarity.cor"
    polarity.write_text("__label__pos fine film .\nno label here\n")
    with pytest.raises(LocatedError, match=r"pang_lee_polarity.cor line 2: expected '__label__"):
        gensim_eval.read_polarity(root)
    assert not (tmp_path / "out").exists()
