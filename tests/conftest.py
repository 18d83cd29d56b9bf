"""Shared fixtures. Real-weight tests need EMBEDDINGGEMMA_300M (set by .ci/run); under CI a missing
checkpoint is a failure, not a skip."""

import os
from pathlib import Path

import jax
import pytest

from embeddinggemma_jax import cache

REPO = Path(__file__).resolve().parents[1]

# The package cache (built datasets, tokenizers) of the tests is the repo's own, never the user's:
# the tests build small variants of the quickstart's datasets, and a build with other settings
# replaces the cached one, under a finished quickstart workdir that still points at it.
os.environ[cache.ENV] = str(REPO / ".cache")

# Share compiled programs between test processes and between models of the same shapes (the
# real-weight tests build several 300m Embedders): compiling dominates their CPU time.
jax.config.update("jax_compilation_cache_dir", str(REPO / ".cache" / "xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
SHARED_TOKENIZER = REPO.parent / "shared" / "data" / "gemma3-tokenizer" / "tokenizer.model"


def random_params(shapes, std: float, seed: int = 0):
    """NumPy normal(0, std) float32 arrays shaped like `shapes` (a ShapeDtypeStruct pytree):
    random values everywhere, norm scales included, so nothing in a comparison is trivial."""
    import numpy as np

    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree.flatten(shapes)
    return jax.tree.unflatten(
        tree, [rng.normal(0.0, std, s.shape).astype(np.float32) for s in leaves]
    )


def train_tiny_tokenizer(folder: Path, text: str, vocab_size: int = 263):
    """A small BPE SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3)."""
    from embeddinggemma_jax.text.tokenizer import Tokenizer, train_bpe

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text(text, encoding="utf-8")
    return Tokenizer(train_bpe(folder / "corpus.txt", folder / "sp", vocab_size))


def gguf_model_config():
    """The 300m preset scaled down for the GGUF export tests: Gemma's 262k vocabulary (its
    tokenizer), 5 local + 1 global layers (llama.cpp's gemma-embedding), widths that GGUF's
    32-value blocks divide."""
    from embeddinggemma_jax.model.config import ModelConfig, layer_pattern

    return ModelConfig.embeddinggemma_300m().replace(
        embed_dim=64, head_dim=32, mlp_dim=96, num_layers=6, layer_types=layer_pattern(6),
        sliding_window=12,  # local layers see |i - j| < 7
        query_pre_attn_scalar=32.0, head_dims=(160, 64), matryoshka_dims=(64,), max_length=512,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cheap_compile():
    """XLA's cheapest compile (jax_disable_most_optimizations; JAX_DISABLE_MOST_OPTIMIZATIONS=1
    for a subprocess) for a module of tiny-model runs, where compiling a step costs far more than
    running it. Results move by float rounding only; the runs a test compares compile alike."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _require(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (see .ci/run)")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def real_checkpoint() -> Path:
    """The released google/embeddinggemma-300m sentence-transformers folder."""
    path = os.environ.get("EMBEDDINGGEMMA_300M")
    if not path or not Path(path, "model.safetensors").exists():
        _require("EMBEDDINGGEMMA_300M (run ../shared/tools/fetch-embeddinggemma)")
    return Path(path)


@pytest.fixture(scope="session")
def gemma_tokenizer_model(real_checkpoint_or_none) -> Path:
    """Path to the real Gemma 3 SentencePiece model."""
    for p in (
        SHARED_TOKENIZER,
        real_checkpoint_or_none and real_checkpoint_or_none / "tokenizer.model",
    ):
        if p and Path(p).exists():
            return Path(p)
    _require("the Gemma 3 tokenizer.model")


@pytest.fixture(scope="session")
def real_checkpoint_or_none() -> Path | None:
    path = os.environ.get("EMBEDDINGGEMMA_300M")
    return Path(path) if path and Path(path, "model.safetensors").exists() else None


# The evaluation tests' tiny random Embedder and local tasks (tests/evalkit.py), once per module.
@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory):
    import evalkit

    return evalkit.tiny_embedder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def local_tasks():
    import evalkit

    return evalkit.local_tasks()


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """Runs of one model shape within a module compile once: a persistent cache of its own that
    keeps every program (the repo-wide one keeps only those slower than 0.5 s to compile)."""
    previous = jax.config.jax_compilation_cache_dir
    previous_min = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous_min)
