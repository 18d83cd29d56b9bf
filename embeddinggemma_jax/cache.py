"""Where the package keeps what it can rebuild: built datasets and tasks, tokenizers, XLA caches.

The root is ``$EMBEDDINGGEMMA_JAX_CACHE`` when set, else ``$XDG_CACHE_HOME/embeddinggemma-jax``,
else ``~/.cache/embeddinggemma-jax``. Point it at an empty folder for a cold run.
"""

from __future__ import annotations

import os
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
