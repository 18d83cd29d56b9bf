"""Code search over SymPy: a docstring's summary -> the function's source.

The second code library besides the standard library (`data.stdlib`), with the same extraction
(`stdlib.collect_functions`: query = the docstring's first sentence, positive = the source without
the docstring, test modules and packages skipped, duplicates dropped) and BM25 hard negatives
(`stdlib.mine_negatives`), run over the installed ``sympy`` package (pure Python, human-written,
BSD licensed).

Split: by subpackage (``sympy.polys``, ``sympy.physics``, ``sympy.core``, ...; a top-level module
such as ``sympy/abc.py`` is a unit of its own), so no subpackage is in two splits. Benchmarks are
skipped with the tests.

CLI: ``python -m embeddinggemma_jax.data.build --dataset sympy``
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax.data import building, stdlib
from embeddinggemma_jax.errors import UserError

NAME = "sympy"
BUILDER_VERSION = 1
TASK = stdlib.TASK  # "task: code retrieval | query: "
_SKIP = {"benchmarks"}


def sympy_root() -> Path:
    """The installed SymPy package directory."""
    spec = importlib.util.find_spec("sympy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "sympy: SymPy is not installed; its source is this dataset's source "
            "(pip install 'embeddinggemma-jax[data]', or pip install sympy)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def collect(
    root: Path, subpackages: Sequence[str] | None = None, *, min_body_lines: int = 3
) -> list[stdlib.Function]:
    """The documented functions under `root` (a sympy package dir), module names ``sympy.*``."""
    if not (root / "__init__.py").is_file():
        raise UserError(f"sympy: {root} is not a package directory (no __init__.py)")
    if subpackages is None:
        subpackages = sorted(
            p.stem if p.suffix == ".py" else p.name
            for p in root.iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py")
        )
    wanted = [s for s in subpackages if s not in _SKIP and s != "__init__"]
    functions = stdlib.collect_functions(root, wanted, min_body_lines=min_body_lines)
    prefix = root.name
    return [
        dataclasses.replace(f, id=f"{prefix}.{f.id}", module=f"{prefix}.{f.module}")
        for f in functions
    ]


def _write_split(tmp: Path, split: str, functions: list, num_negatives: int, seed: int) -> dict:
    negatives = stdlib.mine_negatives(functions, num_negatives, seed)
    building.write_jsonl(tmp / f"{split}.jsonl", stdlib.records(functions, negatives))
    counts = {
        "records": len(functions),
        "modules": len({f.module for f in functions}),
        "subpackages": sorted({f.package for f in functions}),
    }
    if split != "train":
        counts["task"] = stdlib.save_task(tmp / split, f"{NAME}-{split}", functions)
    return counts


def build_sympy(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    subpackages: Sequence[str] | None = None,
    max_records: int | None = None,
    max_eval_records: int | None = 2000,
    min_body_lines: int = 3,
    num_negatives: int = 3,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    force: bool = False,
) -> building.DatasetPaths:
    """Builds (or returns the cached) SymPy code-search dataset; see the module docstring.

    Args:
      out_dir: output directory (default: ``<cache>/data/sympy``).
      root: the sympy package directory (default: the installed one).
      subpackages: only these subpackages / top-level modules (e.g. ``["logic", "sets", "crypto"]``).
      max_records: cap on the train records (a seeded subset); max_eval_records: on dev and test.
      min_body_lines: minimum code lines of a function body.
      num_negatives: BM25 hard negatives per record.
      dev_fraction / test_fraction: share of the functions held out in whole subpackages.
      seed: fixes the split, the caps and any random negative fill.
      force: rebuild even if cached.
    """
    root_path = sympy_root() if root is None else Path(root)
    out = building.default_dir(NAME) if out_dir is None else Path(out_dir)
    key = {
        "builder_version": BUILDER_VERSION,
        "builder_sha": "".join(building.file_sha(m.__file__) for m in (stdlib, building))
        + building.file_sha(__file__),
        "root": str(root_path.resolve()),
        "subpackages": sorted(subpackages) if subpackages else None,
        "max_records": max_records,
        "max_eval_records": max_eval_records,
        "min_body_lines": min_body_lines,
        "num_negatives": num_negatives,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }

    def build(tmp: Path) -> dict:
        functions = collect(root_path, subpackages, min_body_lines=min_body_lines)
        sizes: dict[str, int] = {}
        for f in functions:
            sizes[f.package] = sizes.get(f.package, 0) + 1
        unit_split = building.split_units(sizes, dev_fraction, test_fraction, seed)
        counts = {}
        for split in building.SPLITS:
            rows = [f for f in functions if unit_split[f.package] == split]
            cap = max_records if split == "train" else max_eval_records
            rows = building.take(rows, cap, seed, lambda f: f.id)
            counts[split] = _write_split(tmp, split, rows, num_negatives, seed)
        return {"name": NAME, "task": TASK, "group": "code", "splits": counts}

    return building.cached_build(out, key, build, force=force)
