"""Shared pieces of the benchmarks: real-text workloads, FLOP counting, a measured matmul peak,
CPU-time accounting and an environment report.

Every text comes from the Python standard library installed with the interpreter (docstrings), so
the workloads are real text, identical on every machine with the same Python, and need no network.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

# Modules whose docstrings make the corpora: broad topics, prose and code, short and long.
STDLIB_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar cmd codecs collections concurrent.futures "
    "configparser contextlib copy csv dataclasses datetime decimal difflib dis email enum "
    "fileinput fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac "
    "html html.parser http.client http.server imaplib importlib inspect io ipaddress itertools "
    "json json.decoder logging logging.handlers lzma mailbox math mimetypes multiprocessing "
    "netrc numbers operator optparse os pathlib pdb pickle pickletools pkgutil platform "
    "plistlib poplib pprint profile pstats queue quopri random re reprlib sched secrets "
    "selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 ssl statistics "
    "string struct subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading "
    "timeit tokenize trace traceback tracemalloc types typing unittest unittest.mock urllib.parse "
    "urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree "
    "xml.sax zipfile zipimport zoneinfo"
).split()


def stdlib_docstrings(min_words: int = 8, max_words: int = 400) -> list[str]:
    """Unique docstrings (module, class, function, method) of `STDLIB_MODULES` with a word count in
    [min_words, max_words], in a deterministic order."""
    seen: set[str] = set()
    out: list[str] = []

    def add(obj) -> None:
        doc = inspect.getdoc(obj) if obj.__doc__ else None
        if doc and doc not in seen and min_words <= len(doc.split()) <= max_words:
            seen.add(doc)
            out.append(doc)

    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module missing from this build of Python (e.g. no _ssl)
            continue
        add(module)
        for attr in sorted(vars(module)):
            obj = vars(module)[attr]
            if getattr(obj, "__module__", None) != module.__name__ or attr.startswith("_"):
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                add(obj)
            if inspect.isclass(obj):
                for meth_name in sorted(vars(obj)):
                    meth = vars(obj)[meth_name]
                    if inspect.isfunction(meth) and not meth_name.startswith("__"):
                        add(meth)
    return out


def mixed_corpus(n: int, seed: int = 0, min_words: int = 8, max_words: int = 400) -> list[str]:
    """n docstrings of min_words..max_words words, spread over lengths: equal numbers from each
    doubling of the word count (8-15, 16-31, ..., 256-400) as far as the library has them, then
    shuffled. (A plain sample would be mostly one-liners: the median docstring has 25 words.)"""
    rng = random.Random(seed)
    bins: dict[int, list[str]] = {}
    for doc in stdlib_docstrings(min_words, max_words):
        bins.setdefault(len(doc.split()).bit_length(), []).append(doc)
    available = sum(map(len, bins.values()))
    if n > available:
        raise ValueError(f"asked for {n} texts, the standard library has {available}")
    out: list[str] = []
    pools = [bins[k] for k in sorted(bins)]
    while len(out) < n:  # smallest bins first, each taking an equal share of what is left
        pools.sort(key=len)
        share = -(-(n - len(out)) // len(pools))
        pool = pools.pop(0)
        out.extend(rng.sample(pool, min(share, len(pool), n - len(out))))
    rng.shuffle(out)
    return out


def fixed_length_texts(tokenizer, length: int, n: int, seed: int = 0) -> list[str]:
    """n real texts that each tokenize to exactly `length` ids, BOS and EOS included.

    Windows of the standard library's docstrings (concatenated) at different offsets, decoded to
    text and adjusted until re-encoding gives the exact length. `tokenizer` is our Tokenizer.
    """
    stream = np.concatenate(tokenizer.encode_pieces(["\n\n".join(stdlib_docstrings(8, 10_000))]))
    stream = np.asarray(stream)
    target = length - tokenizer.num_special_added
    starts = random.Random(seed).sample(range(len(stream) - 2 * target), 4 * n)
    out: list[str] = []
    for start in starts:
        k = target
        for _ in range(8):
            text = tokenizer.decode(stream[start : start + k])
            got = len(tokenizer.encode([text])[0])
            if got == length:
                out.append(text)
                break
            k += length - got
        if len(out) == n:
            return out
    raise RuntimeError(f"could not build {n} texts of exactly {length} tokens")


# --- FLOPs -------------------------------------------------------------------------------------


def matmul_params(params) -> int:
    """Parameters used in matmuls: every array of rank >= 2 except the embedding table (a gather)."""
    import jax

    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = "/".join(str(getattr(p, "key", p)) for p in path)
        if np.ndim(leaf) >= 2 and "embedder" not in names:
            total += int(np.size(leaf))
    return total


def attended_pairs(length: int, window: int | None) -> int:
    """(query, key) pairs of a bidirectional layer over `length` tokens; local: |i - j| < window."""
    if window is None or window >= length:
        return length * length
    # Each distance d in 1..window-1 gives (length - d) pairs on each side, plus the diagonal.
    d = np.arange(1, window)
    return int(length + 2 * np.sum(length - d))


def forward_flops(config, n_matmul_params: int, lengths: Sequence[int]) -> float:
    """Useful FLOPs to embed texts of these token lengths (padding excluded): 2 x matmul params
    per token, plus 4 * N * H per attended (query, key) pair per layer."""
    total = 0.0
    per_pair = 4 * config.num_heads * config.head_dim
    for length in lengths:
        total += 2.0 * n_matmul_params * length
        for kind in config.layer_types:
            window = config.window if kind == "local" else None
            total += per_pair * attended_pairs(length, window)
    return total


def matmul_peak_jax(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Best matmul FLOP/s of XLA on the default device ([n, n] @ [n, n] in dtype)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def matmul_peak_torch(
    n: int = 2048, repeats: int = 5, dtype: str = "float32", device="cpu"
) -> float:
    """Best matmul FLOP/s of PyTorch on `device`."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)

    def run():
        a @ a
        if a.is_cuda:
            torch.cuda.synchronize()

    run()
    best = min(_timed(run) for _ in range(repeats))
    return 2 * n**3 / best


def peak_memory_gib(peer=None) -> dict[str, float | None]:
    """Peak accelerator memory of each side (None on CPU, where neither reports it)."""
    import jax

    out: dict[str, float | None] = {"ours": None, "peer": None}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["ours"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
    if peer is not None and str(peer.device).startswith("cuda"):
        import torch

        out["peer"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def random_weight_folder(folder: str, tokenizer_file: str | None) -> str:
    """The 300m architecture with random weights, written as a sentence-transformers folder."""
    from pathlib import Path

    import jax

    from embeddinggemma_jax import Embedder, ModelConfig
    from embeddinggemma_jax.model import param_shapes
    from embeddinggemma_jax.text import Tokenizer

    if Path(folder, "model.safetensors").exists():
        return folder
    if not tokenizer_file:
        raise SystemExit("--random-weights needs --tokenizer (a Gemma 3 tokenizer.model)")
    config = ModelConfig.embeddinggemma_300m()
    rng = np.random.default_rng(0)
    # numpy draws: no compile, no device memory; scale like trained weights (norm scales near 0).
    params = jax.tree.map(
        lambda s: (rng.standard_normal(s.shape, np.float32) * 0.02).astype(np.float32),
        param_shapes(config),
    )
    # A folder with the Hugging Face tokenizer files is copied whole (the peer's fast tokenizer
    # must not be rebuilt from tokenizer.model alone: that conversion tokenizes differently).
    source = Path(tokenizer_file)
    sp_model = source / "tokenizer.model" if source.is_dir() else source
    embedder = Embedder(config, params, Tokenizer(sp_model), tokenizer_files=source)
    embedder.save_pretrained(folder)
    return folder


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- timing ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    wall_s: float
    cpu_s: float  # user + system CPU time of this process over the same span

    @property
    def cores_busy(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else float("nan")


def timed(fn: Callable[[], object]) -> tuple[object, Timing]:
    """Runs fn, returning its result and its wall time and process CPU time."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return result, Timing(wall, cpu)


# --- environment -------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def environment(packages: Sequence[str]) -> dict[str, str]:
    """Versions of Python and the given packages, and what the CPU offers this process."""
    from importlib import metadata

    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in packages:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    info["cpu"] = cpu_model()
    info["cpu_count"] = str(os.cpu_count())
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = str(len(os.sched_getaffinity(0)))
    for var in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "OMP_NUM_THREADS"):
        info[var] = os.environ.get(var, "")
    return info
