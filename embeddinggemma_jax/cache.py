"""Where the package keeps what it can rebuild: built datasets and tasks, tokenizers, XLA caches.

The root is ``$EMBEDDINGGEMMA_JAX_CACHE`` when set, else ``$XDG_CACHE_HOME/embeddinggemma-jax``,
else ``~/.cache/embeddinggemma-jax``. Point it at an empty folder for a cold run.

`atomic_path` / `write_atomic` are how the package writes any file a later run or reader trusts
(built datasets, reports, logs, trial summaries): under a temporary name, renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

ENV = "EMBEDDINGGEMMA_JAX_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache root joined with `parts` (not created)."""
    root = os.environ.get(ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "embeddinggemma-jax")
    return Path(os.path.expanduser(root)).joinpath(*parts)


def compilation_cache_dir() -> Path:
    """JAX's persistent compilation cache: ``$JAX_COMPILATION_CACHE_DIR`` or ``cache_dir("xla")``."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.path.expanduser(os.environ["JAX_COMPILATION_CACHE_DIR"]))
    return cache_dir("xla")


def enable_compilation_cache(min_compile_time_s: float = 1.0) -> None:
    """Turns on JAX's persistent compilation cache (`compilation_cache_dir`): a rerun, or a later
    stage or trial with the same shapes, loads its programs instead of compiling them."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, tmp: Path | None = None) -> Iterator[Path]:
    """Yields a temporary file beside `path` (`tmp`, default ``.<name>.tmp-<pid>``) for the block
    to write; renamed onto `path` when the block ends, removed when it raises. A reader, or a
    run killed mid-write, never sees half a file: `path` is the old file or the whole new one."""
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.tmp-{os.getpid()}")  # pid: parallel writers
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """`text` (UTF-8) -> `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
