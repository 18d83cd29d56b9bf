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
    return building.installed_dir(
        "sympy",
        missing="sympy: SymPy is not installed; its source is this dataset's source "
        "(pip install 'embeddinggemma-jax[data]', or pip install sympy)",
    )


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


def _records(functions: list, num_negatives: int, seed: int) -> tuple[list[dict], dict]:
    negatives = stdlib.mine_negatives(functions, num_negatives, seed)
    counts = {
        "records": len(functions),
        "modules": len({f.module for f in functions}),
        "subpackages": sorted({f.package for f in functions}),
    }
    return stdlib.records(functions, negatives), counts


DATASET = building.UnitDataset(
    NAME,
    BUILDER_VERSION,
    (stdlib.__file__, __file__),  # the extraction is stdlib's
    TASK,
    "code",
    unit=lambda f: f.package,
    record_id=lambda f: f.id,
    records=_records,
    retrieval=stdlib.retrieval,
    max_eval_records=2000,
)


def build_sympy(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    subpackages: Sequence[str] | None = None,
    min_body_lines: int = 3,
    force: bool = False,
    **splitting,
) -> building.DatasetPaths:
    """Builds (or returns the cached) SymPy code-search dataset; see the module docstring.

    Args:
      out_dir: output directory (default: ``<cache>/data/sympy``).
      root: the sympy package directory (default: the installed one).
      subpackages: only these subpackages / top-level modules (e.g. ``["logic", "sets", "crypto"]``).
      min_body_lines: minimum code lines of a function body.
      force: rebuild even if cached.
      splitting: `building.Splitting` (caps, negatives, held-out shares of whole subpackages,
        seed; max_eval_records defaults to 2000 here).
    """
    root_path = sympy_root() if root is None else Path(root)
    return building.build_units(
        DATASET,
        out_dir,
        root_path,
        {
            "subpackages": sorted(subpackages) if subpackages else None,
            "min_body_lines": min_body_lines,
        },
        lambda: collect(root_path, subpackages, min_body_lines=min_body_lines),
        force=force,
        **splitting,
    )
