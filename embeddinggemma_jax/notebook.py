"""What the Colab notebooks (notebooks/0*.py) share, so each one shows only its own steps. On Colab
they import it from the pip-installed checkout; tests/test_notebooks.py runs them headless.

- `setup`: tiny mode or the real model, and a fresh output folder;
- `tiny_tokenizer`: tiny mode's SentencePiece model, trained on the notebook's own text;
- `stdlib_finetune_data`: notebooks 2 and 3's data, the standard library's functions as
  (docstring summary -> qualified name and signature) pairs: a training JSONL and a held-out
  retrieval task;
- `finetune_config`: notebooks 2 and 3's finetune run on that JSONL.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from embeddinggemma_jax import cli
from embeddinggemma_jax.readers import write_jsonl

MODEL_ID = "google/embeddinggemma-300m"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the checkout's experiment configs
MODULES = (
    "textwrap shutil json csv statistics posixpath calendar difflib fnmatch glob tempfile "
    "urllib.parse email.utils html base64 gzip ipaddress uuid mimetypes functools heapq "
    "inspect tokenize ast locale logging subprocess os pprint copy"
).split()
# The prompts the finetune configs put before queries and documents (tiny mode's tokenizer
# learns them too).
FINETUNE_PROMPTS = ["task: search result | query: ", "title: none | text: "]


def setup(name: str) -> tuple[bool, str, Path]:
    """(tiny, model, out) of notebook `name` ("01"). Tiny mode: forced by
    EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY=1 (=0 forces the real model), by default on when JAX has no
    accelerator and EMBEDDINGGEMMA_300M (a local checkpoint) is unset. The model: that checkpoint,
    else the hub's. `out`: $EMBEDDINGGEMMA_JAX_NOTEBOOK_OUT/`name` (default
    notebook_runs/`name`), emptied: a fresh run each time (a run's workdir would resume)."""
    import jax

    flag = os.environ.get("EMBEDDINGGEMMA_JAX_NOTEBOOK_TINY")
    local = os.environ.get("EMBEDDINGGEMMA_300M")
    tiny = flag == "1" if flag in ("0", "1") else jax.default_backend() == "cpu" and not local
    out = Path(os.environ.get("EMBEDDINGGEMMA_JAX_NOTEBOOK_OUT", "notebook_runs")) / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    print(f"tiny mode: {tiny}; devices: {jax.devices()}")
    return tiny, local or MODEL_ID, out


def tiny_tokenizer(lines: list[str], out: Path, vocab_size: int, **options) -> Path:
    """A BPE SentencePiece model with Gemma's special ids trained on `lines` (written to
    `out`/tokenizer_corpus.txt); `options` go to `train_bpe`. Returns `out`/tokenizer.model."""
    from embeddinggemma_jax.text.tokenizer import train_bpe

    corpus = out / "tokenizer_corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train_bpe(corpus, out / "tokenizer", vocab_size, hard_vocab_limit=False, **options)


def stdlib_pairs(modules: list[str]):
    """(module, query: docstring summary, positive: qualified name and signature) per public
    function of `modules` with a summary of 4 words or more."""
    for name in modules:
        module = importlib.import_module(name)
        for fname, f in inspect.getmembers(module, inspect.isfunction):
            if fname.startswith("_") or f.__module__ != module.__name__ or not f.__doc__:
                continue
            summary = " ".join(inspect.cleandoc(f.__doc__).split("\n\n")[0].split())
            if len(summary.split()) >= 4:
                yield name, summary, f"{name}.{fname}{inspect.signature(f)}"


class FinetuneData(NamedTuple):
    pairs: list[tuple[str, str, str]]  # (module, query, positive), shuffled
    train: list[dict]  # the training records: 4 pairs in 5
    held_out: list[tuple[str, str, str]]  # the 5th, never trained on
    train_file: Path  # `train` as JSONL
    eval_task: Path  # `held_out` as a BEIR folder: query i -> document i

    def texts(self) -> list[str]:
        """Every query and positive, and the prompts: tiny mode's tokenizer corpus."""
        return [t for _, q, p in self.pairs for t in (q, p)] + FINETUNE_PROMPTS


def write_beir(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    """(module, query, positive) rows as a retrieval task folder (BEIR files and task.json, named
    after the folder): query i -> document i."""
    from embeddinggemma_jax.eval.tasks import RetrievalTask

    task = RetrievalTask(
        name=folder.name,
        corpus={f"d{i}": (m, p) for i, (m, _, p) in enumerate(rows)},
        queries={f"q{i}": q for i, (_, q, _) in enumerate(rows)},
        qrels={f"q{i}": {f"d{i}": 1} for i in range(len(rows))},
    )
    return task.save(folder)


def stdlib_finetune_data(out: Path, modules: list[str] = MODULES, seed: int = 1) -> FinetuneData:
    """`stdlib_pairs(modules)` shuffled (`seed`), one in five held out: `out`/train.jsonl
    ({"query", "positive", "title": the module}) and the `out`/held_out retrieval task."""
    pairs = list(stdlib_pairs(modules))
    random.Random(seed).shuffle(pairs)
    held_out = pairs[::5]
    train = [{"query": q, "positive": p, "title": m} for i, (m, q, p) in enumerate(pairs) if i % 5]
    train_file = out / "train.jsonl"
    write_jsonl(train_file, train)
    return FinetuneData(pairs, train, held_out, train_file, write_beir(out / "held_out", held_out))


def finetune_config(
    tiny: bool,
    model: str,
    train_file: Path,
    tokenizer: str | os.PathLike | None = None,
    init_from: str = "",
    steps: int | None = None,
) -> Any:
    """A finetune run on `train_file`, unlocked (the notebook adds its own keys, then locks it),
    saving only its last step. Tiny mode: configs/tiny.py with `tokenizer`, 60 steps of 16 pairs
    at a high learning rate, from `init_from` or else random weights. Full mode: the finetune of
    configs/embeddinggemma_300m.py from `init_from` or else `model`, 100 steps of 64 pairs of at
    most 64 tokens."""
    if tiny:
        c = cli.load_config(str(CONFIGS / "tiny.py"))
        c.unlock()
        c.tokenizer = str(tokenizer)
        c.num_steps = steps or 60
        c.data.global_batch_size = 16
        c.optimizer.learning_rate = 3e-3
        c.optimizer.warmup_steps = 4
        c.loss.temperature = 0.1
        if not init_from:
            c.random_init.residual_scale = 0.0  # from scratch: start each layer as its skip path
    else:
        c = cli.load_config(str(CONFIGS / "embeddinggemma_300m.py") + ":finetune")
        c.unlock()
        init_from = init_from or model
        c.num_steps = steps or 100
        c.data.global_batch_size = 64
        c.grad_cache.chunk = None  # 64 rows fit in memory
        c.data.query_max_length = 64
        c.data.doc_max_length = 64
        c.optimizer.warmup_steps = 10
    c.init_from = init_from
    c.data.datasets = [dict(path=str(train_file), weight=1.0, task="query", num_negatives=0)]
    c.checkpoint.every = 0
    return c
