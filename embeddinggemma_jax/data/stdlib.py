"""The quickstart dataset: code search over the running Python's standard library, built offline.

For every documented function (and method) of the standard library:

- query: the docstring's summary (its first sentence);
- positive: the function's source (decorators included) without its docstring, dedented;
- title: the module's dotted name;
- negatives: hard negatives mined with BM25 (bm25s) over the positives of the same split: the
  query's top hits, skipping the function itself and every function with the same summary.

Filtered out: test packages and modules (``test``, ``tests``, ``idle_test``, ``test_*.py``,
``*_test.py``), site-packages, functions whose name starts with ``test``, summaries under three
words or shaped like a signature, bodies under `min_body_lines` code lines (comments and blank
lines not counted), and duplicates (the same code, whitespace ignored; the first in module order is
kept).

Split: held out by top-level package (``email.parser`` and ``email.utils`` go together), so no
module, and no package, is in both splits. Packages are taken in an order fixed by a hash of
``(seed, name)`` until the eval split has `eval_fraction` of the functions.

Output directory::

    train.jsonl, eval.jsonl        records in the `records` schema, task "InstructionRetrieval"
                                   (the checkpoint's "task: code retrieval | query: " prompt)
    beir/corpus.jsonl              {"_id", "title", "text"}: the eval split's functions
    beir/queries.jsonl             {"_id", "text"}: one per distinct eval summary
    beir/qrels/test.tsv            query-id, corpus-id, score (header row; tab-separated): every
                                   eval function with the query's summary is relevant (score 1)
    manifest.json                  settings, counts, Python version; the build cache key
    dev.jsonl, dev/                with dev_fraction > 0 (the mixture's build): a third split of
                                   whole packages and its `eval.tasks.RetrievalTask` folder

Everything is deterministic for a given Python installation and settings; a second call with the
same settings and output directory returns the cached build.

CLI: ``python -m embeddinggemma_jax.data.stdlib --out data/stdlib``
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import sys
import sysconfig
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from embeddinggemma_jax.cache import atomic_path, write_atomic
from embeddinggemma_jax.data import building

BUILDER_VERSION = 1
TASK = "InstructionRetrieval"  # DEFAULT_PROMPTS: "task: code retrieval | query: "
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(`'\"])")


@dataclasses.dataclass(frozen=True)
class Function:
    """One extracted function. `id` is ``"module:QualName"`` (``#n`` appended on a clash)."""

    id: str
    module: str
    package: str
    qualname: str
    summary: str
    code: str
    path: str
    lineno: int


def stdlib_root() -> Path:
    """The directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_test_name(name: str) -> bool:
    return (
        name.startswith(("test_", "_test")) or name.endswith("_test") or name in ("test", "tests")
    )


def module_files(root: Path, packages: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(dotted module name, path) of the library's non-test modules, sorted by module name."""
    wanted = set(packages) if packages else None
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        # Prune: tests, installed packages, and directories that cannot be packages.
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and d.isidentifier() and not _is_test_name(d)
        )
        if rel.parts and wanted is not None and rel.parts[0] not in wanted:
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            stem = name[:-3]
            if not name.endswith(".py") or not stem.isidentifier() or _is_test_name(stem):
                continue
            parts = [*rel.parts] if stem == "__init__" else [*rel.parts, stem]
            if not parts or (wanted is not None and parts[0] not in wanted):
                continue
            out.append((".".join(parts), Path(dirpath) / name))
    return sorted(out)


def summarize(docstring: str) -> str | None:
    """The first sentence of a docstring's first paragraph, or None if it is not a usable query."""
    lines = []
    for line in docstring.strip().splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    paragraph = " ".join(lines)
    summary = _SENTENCE_END.split(paragraph, maxsplit=1)[0].strip()
    if len(summary.split()) < 3 or len(summary) > 300 or _SIGNATURE.match(summary):
        return None
    return summary


def _code_lines(lines: Sequence[str]) -> int:
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def extract_functions(
    source: str, module: str, path: str = "", *, min_body_lines: int = 3
) -> list[Function]:
    """The usable documented functions of one module's source (see the module docstring)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    out: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = f"{prefix}{child.name}"
                function = _function(child, qualname)
                if function is not None:
                    out.append(function)
                visit(child, f"{qualname}.<locals>.")

    def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str) -> Function | None:
        if node.name.startswith("test"):
            return None
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            return None
        summary = summarize(doc)
        if summary is None:
            return None
        doc_node = node.body[0]
        if doc_node.lineno == node.lineno or len(node.body) < 2:
            return None  # one-line def, or nothing but the docstring
        # The docstring must sit alone on its lines, so dropping those lines drops exactly it.
        if lines[doc_node.end_lineno - 1][doc_node.end_col_offset :].strip():
            return None
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        body = lines[doc_node.end_lineno : node.end_lineno]
        while body and not body[0].strip():
            body = body[1:]
        if _code_lines(body) < min_body_lines:
            return None
        head = lines[start - 1 : doc_node.lineno - 1]
        code = textwrap.dedent("\n".join(head + body)).strip("\n")
        return Function(
            id=f"{module}:{qualname}",
            module=module,
            package=module.split(".")[0],
            qualname=qualname,
            summary=summary,
            code=code,
            path=path,
            lineno=node.lineno,
        )

    visit(tree, "")
    return out


def collect_functions(
    root: Path | None = None,
    packages: Sequence[str] | None = None,
    *,
    min_body_lines: int = 3,
    progress: bool = False,
) -> list[Function]:
    """Extracts, filters and de-duplicates the functions of the library under `root`."""
    root = stdlib_root() if root is None else Path(root)
    files = module_files(root, packages)
    if not files:
        raise ValueError(f"no modules found under {root} (packages={packages})")
    iterator: Iterable = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="parsing stdlib", unit="module", leave=False)
    functions: list[Function] = []
    seen_code: set[str] = set()
    seen_id: dict[str, int] = defaultdict(int)
    for module, path in iterator:
        try:
            source = importlib.util.decode_source(path.read_bytes())
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for f in extract_functions(source, module, str(path), min_body_lines=min_body_lines):
            key = " ".join(f.code.split())
            if key in seen_code:
                continue
            seen_code.add(key)
            seen_id[f.id] += 1
            if seen_id[f.id] > 1:  # e.g. a function defined in both branches of an `if`
                f = dataclasses.replace(f, id=f"{f.id}#{seen_id[f.id]}")
            functions.append(f)
    return functions


def _hash_order(seed: int, name: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()


def split_by_package(
    functions: Sequence[Function], eval_fraction: float, seed: int
) -> tuple[list[Function], list[Function]]:
    """(train, eval): whole top-level packages go to eval, in hash order, up to `eval_fraction`."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    sizes: dict[str, int] = defaultdict(int)
    for f in functions:
        sizes[f.package] += 1
    if len(sizes) < 2:
        raise ValueError(f"need at least two packages to split, got {sorted(sizes)}")
    order = sorted(sizes, key=lambda p: _hash_order(seed, p))
    held_out: set[str] = set()
    total = 0
    for package in order[:-1]:  # at least one package stays in train
        if total >= eval_fraction * len(functions):
            break
        held_out.add(package)
        total += sizes[package]
    train = [f for f in functions if f.package not in held_out]
    evaluation = [f for f in functions if f.package in held_out]
    return train, evaluation


def code_tokens(text: str) -> list[str]:
    """BM25 terms: identifiers split at underscores and camelCase, lower-cased, plus the whole words."""
    from bm25s.stopwords import STOPWORDS_EN

    out = []
    for word in re.findall(r"\w+", text):
        lowered = word.lower()
        parts = [p.lower() for p in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", word)]
        for token in {lowered, *parts}:
            if len(token) > 1 and token not in STOPWORDS_EN:
                out.append(token)
    return out


def normal_summary(summary: str) -> str:
    return " ".join(summary.lower().split()).rstrip(".")


def mine_negatives(functions: Sequence[Function], num_negatives: int, seed: int) -> list[list[int]]:
    """For each function, `num_negatives` indices of hard negatives within `functions` (BM25 of
    its summary over their code, `building.bm25_negatives`).

    Excludes the function itself and functions with the same summary; when BM25 finds too few
    (a tiny corpus), the rest are drawn at random (seeded) from the remaining functions.
    """
    summaries = [normal_summary(f.summary) for f in functions]
    same: dict[str, set[int]] = defaultdict(set)
    for i, s in enumerate(summaries):
        same[s].add(i)
    return building.bm25_negatives(
        [code_tokens(f.summary) for f in functions],
        [code_tokens(f.code) for f in functions],
        [same[s] for s in summaries],
        num_negatives,
        seed,
    )


def records(functions: Sequence[Function], negatives: Sequence[Sequence[int]]) -> list[dict]:
    return [
        {
            "query": f.summary,
            "positive": f.code,
            "negatives": [functions[j].code for j in negs],
            "title": f.module,
            "task": TASK,
            "query_id": f"q:{f.id}",
            "positive_id": f.id,
        }
        for f, negs in zip(functions, negatives)
    ]


def _write_beir(out: Path, functions: Sequence[Function]) -> tuple[int, int]:
    beir = out / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)
    building.write_jsonl(
        beir / "corpus.jsonl", ({"_id": f.id, "title": f.module, "text": f.code} for f in functions)
    )
    groups: dict[str, list[Function]] = {}
    for f in functions:
        groups.setdefault(normal_summary(f.summary), []).append(f)
    queries = [(f"q:{members[0].id}", members[0].summary, members) for members in groups.values()]
    building.write_jsonl(
        beir / "queries.jsonl", ({"_id": qid, "text": text} for qid, text, _ in queries)
    )
    with atomic_path(beir / "qrels" / "test.tsv") as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, _, members in queries:
            for m in members:
                f.write(f"{qid}\t{m.id}\t1\n")
    return len(queries), sum(len(m) for _, _, m in queries)


def retrieval(functions: Sequence[Function]) -> tuple[dict, dict, dict]:
    """(corpus, queries, qrels) of code search over `functions`: one query per distinct summary,
    every function with the summary relevant."""
    queries, qrels = building.distinct_queries(
        functions,
        key=lambda f: normal_summary(f.summary),
        text=lambda f: f.summary,
        doc_id=lambda f: f.id,
        query_id=lambda f, _: f"q:{f.id}",
    )
    return {f.id: (f.module, f.code) for f in functions}, queries, qrels


def save_task(folder: Path, name: str, functions: Sequence[Function]) -> dict:
    """The functions as an `eval.tasks.RetrievalTask` folder (`retrieval`); returns its counts."""
    return building.save_retrieval(folder, name, *retrieval(functions), TASK)


def build(
    out_dir: str | os.PathLike,
    *,
    packages: Sequence[str] | None = None,
    eval_fraction: float = 0.1,
    dev_fraction: float = 0.0,
    num_negatives: int = 3,
    seed: int = 0,
    min_body_lines: int = 3,
    root: str | os.PathLike | None = None,
    progress: bool = False,
    force: bool = False,
) -> dict:
    """Builds (or returns the cached) dataset in `out_dir`; returns the manifest.

    Args:
      out_dir: output directory (created).
      packages: restrict to these top-level packages/modules (e.g. ``["json", "csv"]``).
      eval_fraction: share of the functions held out (whole packages) for evaluation.
      dev_fraction: when > 0, this share of the functions is held out too (whole packages, none
        of eval's) as ``dev.jsonl`` + a ``dev/`` retrieval task, for choosing (mixture search).
      num_negatives: hard negatives per record.
      seed: fixes the split order and any random negative fill.
      min_body_lines: minimum code lines of a function body (docstring excluded).
      root: library directory (default: the running interpreter's standard library).
      progress: show a progress bar.
      force: rebuild even when `out_dir` holds a build with the same settings.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    root_path = stdlib_root() if root is None else Path(root)
    key = {
        "builder_version": BUILDER_VERSION,
        # Any change to this builder invalidates cached builds.
        "builder_sha": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
        "python": sys.version,
        "root": str(root_path.resolve()),
        "packages": sorted(packages) if packages else None,
        "eval_fraction": eval_fraction,
        "dev_fraction": dev_fraction,
        "num_negatives": num_negatives,
        "seed": seed,
        "min_body_lines": min_body_lines,
    }
    manifest_path = out / "manifest.json"
    files = [
        "train.jsonl",
        "eval.jsonl",
        "beir/corpus.jsonl",
        "beir/queries.jsonl",
        "beir/qrels/test.tsv",
    ]
    if dev_fraction > 0:
        files += ["dev.jsonl", "dev/task.json"]
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("key") == key and all((out / f).is_file() for f in files):
            return {**manifest, "cached": True}
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a half-written build must not look finished

    functions = collect_functions(
        root_path, packages, min_body_lines=min_body_lines, progress=progress
    )
    train, evaluation = split_by_package(functions, eval_fraction, seed)
    named = [("train", train), ("eval", evaluation)]
    if dev_fraction > 0:
        train, dev = split_by_package(train, dev_fraction / (1 - eval_fraction), seed + 1)
        named = [("train", train), ("dev", dev), ("eval", evaluation)]
        save_task(out / "dev", "stdlib-dev", dev)
    splits = {}
    for name, split in named:
        negatives = mine_negatives(split, num_negatives, seed)
        building.write_jsonl(out / f"{name}.jsonl", records(split, negatives))
        splits[name] = {
            "records": len(split),
            "modules": len({f.module for f in split}),
            "packages": sorted({f.package for f in split}),
        }
    num_queries, num_qrels = _write_beir(out, evaluation)
    manifest = {
        "key": key,
        "files": files,
        "splits": splits,
        "beir": {"corpus": len(evaluation), "queries": num_queries, "qrels": num_qrels},
        "task": TASK,
        "build_seconds": round(time.perf_counter() - start, 2),
    }
    write_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return {**manifest, "cached": False}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m embeddinggemma_jax.data.stdlib",
        description="Build the standard-library code-search dataset (offline).",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--num-negatives", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-body-lines", type=int, default=3)
    parser.add_argument(
        "--packages", default=None, help="comma-separated top-level packages (default: all)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    manifest = build(
        args.out,
        packages=args.packages.split(",") if args.packages else None,
        eval_fraction=args.eval_fraction,
        num_negatives=args.num_negatives,
        seed=args.seed,
        min_body_lines=args.min_body_lines,
        progress=not args.quiet,
        force=args.force,
    )
    s, b = manifest["splits"], manifest["beir"]
    state = "cached" if manifest["cached"] else f"built in {manifest['build_seconds']:.1f} s"
    print(
        f"stdlib code search ({state}) -> {args.out}: train {s['train']['records']} records "
        f"({s['train']['modules']} modules), eval {s['eval']['records']} records "
        f"({s['eval']['modules']} modules; beir: {b['queries']} queries, {b['corpus']} docs)"
    )


if __name__ == "__main__":
    main()
