"""`make quickstart`: train a tiny EmbeddingGemma from scratch on real data, on a laptop CPU.

1. builds the standard-library code-search dataset (`data.stdlib`: docstring summary -> function
   source, BM25 hard negatives, held-out packages for evaluation), cached;
2. trains a small SentencePiece tokenizer (BPE, 4k pieces) on its training split (Gemma's
   special ids: pad 0, eos 1, bos 2, unk 3; byte fallback; spaces as pieces of their own so prose
   words and code identifiers share pieces), cached;
3. trains a tiny Gemma 3 encoder from random weights with the full objective (contrastive with
   hard negatives + spread-out, Matryoshka), evaluating the held-out split (nDCG@10, recall@10)
   before and after;
4. prints a before/after table and writes ``<workdir>/report.json``
   (``{"before": {metric: value}, "after": {metric: value}, "wall_s": ...}``).

    python -m embeddinggemma_jax.quickstart [--workdir=runs/quickstart] [--config.num_steps=300]

The run always starts fresh (an earlier run's checkpoints in the workdir are removed). The same
settings run through the generic entry point with
``python -m embeddinggemma_jax.main --config=configs/quickstart.py --workdir=...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import ml_collections

from embeddinggemma_jax import readers
from embeddinggemma_jax.cache import cache_dir
from embeddinggemma_jax.tables import format_table

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


def enable_compilation_cache() -> None:
    """Persistent XLA cache: a second quickstart skips most compilation."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax-compilation-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike, start: float) -> dict:
    from embeddinggemma_jax import checkpoint
    from embeddinggemma_jax.train.trainer import Trainer

    workdir = Path(workdir)
    owned = (checkpoint.CHECKPOINTS, checkpoint.TOKENIZER, "train_config.json", "tensorboard")
    owned += ("metrics.jsonl", "report.json")
    if any((workdir / name).exists() for name in owned):
        # A fresh run: the old tokenizer may be another build (its file embeds the temp path).
        print(f"removing the previous quickstart run in {workdir}", flush=True)
        for name in owned:
            p = workdir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    t_train = time.perf_counter()
    trainer = Trainer(config, workdir)  # runs config.prepare: the dataset and tokenizer
    info = trainer.prepared
    t_train += info["data_s"] + info["tokenizer_s"]  # training + evaluation only, as before
    print(
        f"data: {info['train_records']} training pairs, held-out {info['eval_queries']} queries / "
        f"{info['eval_docs']} functions ({'cached' if info['data_cached'] else 'built'} in "
        f"{info['data_s']:.1f} s); tokenizer {config.tokenizer} ({info['tokenizer_s']:.1f} s)",
        flush=True,
    )
    summary = trainer.fit()
    trainer.close()
    train_s = time.perf_counter() - t_train
    evals = summary["history"]["eval"]
    strip = ("seconds",)
    before = {k: v for k, v in evals[0].items() if k not in ("step", "split", *strip)}
    after = {k: v for k, v in evals[-1].items() if k not in ("step", "split", *strip)}
    wall = time.perf_counter() - start
    report = {
        "before": before,
        "after": after,
        "wall_s": round(wall, 1),
        "train_and_eval_s": round(train_s, 1),
        "steps": summary["step"],
        "data": info,
        "tokenizer": config.tokenizer,
        "model": {
            k: v for k, v in config.model.to_dict().items() if v is not None and k != "preset"
        },
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"held-out stdlib code search ({info['eval_queries']} queries, {info['eval_docs']} docs)")
    rows = [[n, f"{before[n]:.4f}", f"{after[n]:.4f}", f"{after[n] - before[n]:+.4f}"]
            for n in after if n in before]  # fmt: skip
    print(format_table(["metric", "before", "after", "change"], rows))
    print(
        f"\nwall time {wall:.0f} s (training + evaluation {train_s:.0f} s); report: "
        f"{workdir / 'report.json'}"
    )
    print(f"embed with it: Embedder.from_pretrained({str(workdir)!r})")
    return report


def main(argv=None) -> None:
    start = time.perf_counter()
    from absl import app, flags

    from embeddinggemma_jax import cli

    flags.DEFINE_string("workdir", "runs/quickstart", "where checkpoints, logs and report go")
    cli.define_config_dict("config", quickstart_config(), (argv or sys.argv)[1:])

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax's INFO chatter
        enable_compilation_cache()
        run(flags.FLAGS.config, flags.FLAGS.workdir, start)

    cli.run_absl(_main, argv or sys.argv)


if __name__ == "__main__":
    main()
