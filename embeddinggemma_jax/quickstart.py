"""The single-stage quickstart run (configs/quickstart.py): its data and tokenizer.

`prepare` is that config's ``prepare`` step: it builds the standard-library code-search dataset
(`data.stdlib`: docstring summary -> function source, BM25 hard negatives, held-out packages for
evaluation) and trains a small SentencePiece tokenizer (BPE, 4k pieces) on its training split
(Gemma's special ids: pad 0, eos 1, bos 2, unk 3; byte fallback; spaces as pieces of their own so
prose words and code identifiers share pieces), both cached, and points the config at them:

    python -m embeddinggemma_jax.main --config=configs/quickstart.py --workdir=runs/stdlib

trains a tiny Gemma 3 encoder from random weights with the full objective on it, evaluating the
held-out split (nDCG@10, recall@10) before and after. `make quickstart` runs the whole recipe
instead (`embeddinggemma_jax.recipe`, configs/recipe.py:quickstart).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

import ml_collections

from embeddinggemma_jax import readers
from embeddinggemma_jax.cache import cache_dir

TOKENIZER_VERSION = 2  # bump when the tokenizer recipe below changes
CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"


def quickstart_config() -> ml_collections.ConfigDict:
    """The quickstart experiment, unlocked: ``get_config()`` of configs/quickstart.py."""
    from embeddinggemma_jax.cli import load_config

    config = load_config(str(CONFIG_FILE))
    config.unlock()
    return config


def _tokenizer_corpus(train_jsonl: Path, out: Path, seed: int) -> None:
    """One text per line: queries, titles and code lines of the training split, plus the prompts."""
    from embeddinggemma_jax.text import DEFAULT_PROMPTS

    lines = [p.strip() for p in DEFAULT_PROMPTS.values()] + ["title: none | text:"]
    for _, r in readers.read_jsonl(train_jsonl):
        lines.append(r["query"])
        if r.get("title"):
            lines.append(f"title: {r['title']} | text:")
        lines.extend(x for x in r["positive"].split("\n") if x.strip())
    random.Random(seed).shuffle(lines)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def train_tokenizer(data_dir: str | os.PathLike, vocab_size: int = 4000, seed: int = 0) -> Path:
    """A SentencePiece BPE model trained on the stdlib training split (cached by content)."""
    import sentencepiece as spm

    from embeddinggemma_jax.text.tokenizer import train_bpe

    data_dir = Path(data_dir)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    key = json.dumps(
        [manifest["key"], vocab_size, seed, TOKENIZER_VERSION, spm.__version__], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    out_dir = cache_dir() / "quickstart-tokenizer" / f"spm{vocab_size}-{digest}"
    model = out_dir / "tokenizer.model"
    if model.is_file():
        return model
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    corpus = tmp / "corpus.txt"
    _tokenizer_corpus(data_dir / "train.jsonl", corpus, seed)
    trained = train_bpe(
        corpus,
        tmp / "tokenizer",
        vocab_size,
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        # Spaces are pieces of their own (runs of 4 and 8 for indentation), so a word is the
        # same piece in prose and in code: "the header path" and "get_header_path(" share
        # "header" and "path". Without this, "▁path" (prose) and "path" (code) never meet.
        user_defined_symbols=["\u2581" * 8, "\u2581" * 4, "\u2581"],
        split_digits=True,
        character_coverage=0.9995,
        input_sentence_size=200_000,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=200_000,
        num_threads=os.cpu_count() or 1,
    )
    os.replace(trained, model)
    shutil.rmtree(tmp, ignore_errors=True)
    return model


def prepare(config: ml_collections.ConfigDict, progress: bool = False) -> dict:
    """Builds the dataset and the tokenizer (both cached) and points `config` at them."""
    from embeddinggemma_jax.data import stdlib

    s = config.stdlib
    data_dir = Path(s.dir) if s.dir else cache_dir() / "stdlib"
    t0 = time.perf_counter()
    manifest = stdlib.build(
        data_dir,
        eval_fraction=s.eval_fraction,
        num_negatives=s.num_negatives,
        seed=s.seed,
        progress=progress,
    )
    t1 = time.perf_counter()
    if not config.tokenizer:
        config.tokenizer = str(train_tokenizer(data_dir, s.vocab_size, s.seed))
    t2 = time.perf_counter()
    config.train_data = str(data_dir / "train.jsonl")
    config.data.datasets = [{**dict(config.data.datasets[0]), "num_negatives": s.train_negatives}]
    config.eval.task = str(data_dir / "beir")
    return {
        "data_dir": str(data_dir),
        "data_cached": manifest.get("cached", False),
        "train_records": manifest["splits"]["train"]["records"],
        "eval_queries": manifest["beir"]["queries"],
        "eval_docs": manifest["beir"]["corpus"],
        "data_s": t1 - t0,
        "tokenizer_s": t2 - t1,
    }
