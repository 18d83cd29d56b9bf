"""Evaluation tasks of other types than retrieval, from the human-annotated corpora that the gensim
wheel ships in its test data (``gensim/test/test_data``), disjoint from every training source:

    lee-sts             STS: the Lee et al. (2005) corpus, 50 news documents (``lee.cor``) with
                        human similarity ratings of every pair, averaged and scaled to 0-1
                        (``similarities0-1.txt``, an upper-triangular 50 x 50 matrix): 1,225 pairs
    pang-lee-polarity   Classification: 200 movie-review sentences labelled pos / neg
                        (``pang_lee_polarity.cor``, ``__label__neg text`` lines), split in halves
                        (train for the probe, test for the score) by a seeded hash of the text

Both are `eval.tasks` folders (``load_task(folder)`` / ``python -m embeddinggemma_jax.evaluate``).
gensim is read as data only (never imported).

CLI: ``python -m embeddinggemma_jax.data.build --dataset gensim-eval``
"""

from __future__ import annotations

import os
from pathlib import Path

from embeddinggemma_jax.data import building
from embeddinggemma_jax.errors import LocatedError

NAME = "gensim-eval"
BUILDER_VERSION = 1
TASKS = ("lee-sts", "pang-lee-polarity")


def gensim_data_dir() -> Path:
    """The installed gensim wheel's ``test/test_data`` directory."""
    return building.installed_dir(
        "gensim",
        "test",
        "test_data",
        marker="lee.cor",
        missing="gensim-eval: gensim is not installed; its test data is these tasks' source "
        "(pip install 'embeddinggemma-jax[eval]', or pip install gensim)",
    )


def _lines(path: Path) -> list[str]:
    # The two corpora are 8-bit Windows text (lee.cor has "\xa33,000" for "£3,000").
    try:
        return path.read_text(encoding="cp1252").splitlines()
    except UnicodeDecodeError as e:
        raise LocatedError(
            f"not cp1252 text ({e.reason})", where=f"{path} byte {e.start}"
        ) from None


def read_lee(root: Path) -> tuple[list[str], list[list[float]]]:
    """(documents, similarity matrix) of the Lee corpus; LocatedError on a malformed file."""
    docs = [" ".join(line.split()) for line in _lines(root / "lee.cor") if line.strip()]
    path = root / "similarities0-1.txt"
    rows = []
    for i, line in enumerate(_lines(path)):
        if not line.strip():
            continue
        try:
            row = [float(x) for x in line.split()]
        except ValueError as e:
            raise LocatedError(f"not a number ({e})", where=f"{path} line {i + 1}") from None
        if len(row) != len(docs) or any(not 0 <= x <= 1 for x in row):
            raise LocatedError(
                f"expected {len(docs)} similarities in [0, 1] (one per document of lee.cor), "
                f"got {len(row)}",
                where=f"{path} line {i + 1}",
            )
        rows.append(row)
    if len(rows) != len(docs):
        raise LocatedError(
            f"expected {len(docs)} rows (one per document), got {len(rows)}", where=str(path)
        )
    return docs, rows


def read_polarity(root: Path) -> list[tuple[str, str]]:
    """(text, label) lines of ``pang_lee_polarity.cor``; LocatedError on a line without a label."""
    path = root / "pang_lee_polarity.cor"
    out = []
    for i, line in enumerate(_lines(path)):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if not label.startswith("__label__") or not text.strip():
            raise LocatedError("expected '__label__NAME text'", where=f"{path} line {i + 1}")
        out.append((" ".join(text.split()), label[len("__label__") :]))
    return out


def build_gensim_eval(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    force: bool = False,
    **unused,
) -> building.DatasetPaths:
    """Writes (or returns the cached) ``lee-sts/`` and ``pang-lee-polarity/`` task folders.

    Args:
      out_dir: output directory (default: ``<cache>/data/gensim-eval``).
      root: gensim's test-data directory (default: the installed wheel's).
      seed: fixes the polarity train/test halves.
      force: rebuild even if cached.
      unused: the size caps other builders take (these tasks are small and kept whole).
    """
    from embeddinggemma_jax.eval.tasks import ClassificationTask, STSTask

    root_path = gensim_data_dir() if root is None else Path(root)
    key = building.builder_key(BUILDER_VERSION, __file__, root=str(root_path.resolve()), seed=seed)

    def build(tmp: Path) -> dict:
        docs, sims = read_lee(root_path)
        pairs = [(i, j) for i in range(len(docs)) for j in range(i + 1, len(docs))]
        STSTask(
            name="lee-sts",
            sentence1=[docs[i] for i, _ in pairs],
            sentence2=[docs[j] for _, j in pairs],
            scores=[sims[i][j] for i, j in pairs],
        ).save(tmp / "lee-sts")
        rows = read_polarity(root_path)
        order = sorted(range(len(rows)), key=lambda k: building.hash_order(seed, rows[k][0]))
        test = set(order[: len(rows) // 2])
        train_rows = [r for k, r in enumerate(rows) if k not in test]
        test_rows = [r for k, r in enumerate(rows) if k in test]
        ClassificationTask(
            name="pang-lee-polarity",
            texts=[t for t, _ in test_rows],
            labels=[y for _, y in test_rows],
            train_texts=[t for t, _ in train_rows],
            train_labels=[y for _, y in train_rows],
        ).save(tmp / "pang-lee-polarity")
        return {
            "name": NAME,
            "tasks": {
                "lee-sts": {"type": "STS", "documents": len(docs), "pairs": len(pairs)},
                "pang-lee-polarity": {
                    "type": "Classification",
                    "train": len(train_rows),
                    "test": len(test_rows),
                },
            },
        }

    out = building.output_dir(NAME, out_dir)
    out, manifest, cached = building.cached_dir(out, key, build, TASKS, force=force)
    return building.DatasetPaths(out, manifest, cached, None, None, None, None, None)
