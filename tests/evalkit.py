"""Shared pieces of the evaluation tests: real stdlib text, a deterministic toy encoder, a
retrieval fixture task, and a tiny random `Embedder` with tasks built from stdlib docstrings."""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import textwrap
from pathlib import Path

import jax
import numpy as np
from conftest import train_tiny_tokenizer

from embeddinggemma_jax.eval import RetrievalTask, STSTask

# Real text for fixtures: the stdlib's own function names and docstring summaries.
_FUNCS = [getattr(m, n) for m in (textwrap, shutil, json) for n in sorted(dir(m))]
_FUNCS = [
    f for f in _FUNCS if inspect.isfunction(f) and f.__doc__ and not f.__name__.startswith("_")
]
SUMMARIES = {
    f"{f.__module__}.{f.__name__}": inspect.cleandoc(f.__doc__).split("\n\n")[0] for f in _FUNCS
}


class HashingEncoder:
    """A deterministic character-trigram embedding that records how it was called."""

    def __init__(self):
        self.calls: list[tuple[str | None, int, list[str]]] = []

    def __call__(self, texts, prompt_name, dim):
        self.calls.append((prompt_name, dim, list(texts)))
        out = np.full((len(texts), dim), 1e-3, np.float32)
        for i, t in enumerate(texts):
            for j in range(len(t) - 2):
                h = int.from_bytes(hashlib.md5(t[j : j + 3].encode()).digest()[:4], "little")
                out[i, h % dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def retrieval_task(**kw) -> RetrievalTask:
    ids = sorted(SUMMARIES)
    corpus = {i: (i.split(".")[0], SUMMARIES[i]) for i in ids}
    queries = {f"q-{i}": i.split(".")[-1].replace("_", " ") for i in ids}
    qrels = {f"q-{i}": {i: 1} for i in ids}
    qrels[f"q-{ids[0]}"][ids[1]] = 2  # graded
    return RetrievalTask(name="fixture", corpus=corpus, queries=queries, qrels=qrels, **kw)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def jsonl_lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


MODULES = (json, csv, textwrap, shutil, os, re, argparse, logging, inspect)


def stdlib_functions() -> dict[str, str]:
    out = {}
    for m in (textwrap, shutil, json, csv):
        for name in sorted(dir(m)):
            f = getattr(m, name)
            if inspect.isfunction(f) and f.__doc__ and not name.startswith("_"):
                out[f"{m.__name__}.{name}"] = inspect.cleandoc(f.__doc__).split("\n\n")[0]
    return out


def tiny_embedder(folder, seed: int = 0):
    """A random tiny model with a small SentencePiece model trained on stdlib docstrings."""
    from embeddinggemma_jax.embedder import Embedder
    from embeddinggemma_jax.model import ModelConfig, init_params

    tok = train_tiny_tokenizer(folder, "\n".join(m.__doc__ for m in MODULES))
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size)
    return Embedder(cfg, init_params(cfg, jax.random.key(seed)), tok, max_length=64)


def local_tasks() -> list:
    """A retrieval and an STS task over the stdlib functions' names and docstring summaries."""
    funcs = stdlib_functions()
    ids = sorted(funcs)
    retrieval = RetrievalTask(
        name="stdlib-mini-retrieval",
        corpus={i: (i.split(".")[0], funcs[i]) for i in ids},
        queries={f"q-{i}": i.split(".")[-1].replace("_", " ") for i in ids},
        qrels={f"q-{i}": {i: 1} for i in ids},
    )
    sts = STSTask(
        name="stdlib-mini-sts",
        sentence1=[i.split(".")[-1].replace("_", " ") for i in ids],
        sentence2=[funcs[i] for i in ids],
        scores=[float(len(funcs[i]) % 5) for i in ids],
    )
    return [retrieval, sts]
