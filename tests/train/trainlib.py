"""Shared helpers for the training tests: a tiny SentencePiece model, a small synthetic
code-search dataset (JSONL + BEIR eval folder) and tiny configs. Imported by tests/train/test_*.py
and by the subprocess scripts they run."""

from __future__ import annotations

import json
import random
from pathlib import Path

VERBS = ["sort", "parse", "read", "write", "merge", "split", "count", "format", "load", "join"]
NOUNS = ["list", "file", "header", "path", "number", "string", "table", "record", "token", "line"]


def records(n: int = 48, num_negatives: int = 2, seed: int = 0) -> list[dict]:
    """Deterministic query/positive/negatives records (distinct verb-noun pairs)."""
    rng = random.Random(seed)
    pairs = [(v, o) for v in VERBS for o in NOUNS]
    rng.shuffle(pairs)
    pairs = pairs[:n]
    out = []
    for i, (v, o) in enumerate(pairs):
        body = f"def {v}_{o}(x):\n    return {v}({o}(x))"
        negs = []
        for j in range(1, num_negatives + 1):
            v2, o2 = pairs[(i + j) % len(pairs)]
            negs.append(f"def {v2}_{o2}(x):\n    return {v2}({o2}(x))")
        out.append(
            {
                "query": f"{v.capitalize()} the {o} of x.",
                "positive": body,
                "negatives": negs,
                "title": f"mod{i % 5}",
            }
        )
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_beir(folder: Path, rows: list[dict]) -> Path:
    """An eval retrieval task (BEIR layout) from records: query i -> document i."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(
        folder / "corpus.jsonl",
        [{"_id": f"d{i}", "title": r["title"], "text": r["positive"]} for i, r in enumerate(rows)],
    )
    write_jsonl(
        folder / "queries.jsonl", [{"_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)]
    )
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(rows)))
    )
    return folder


def train_sentencepiece(folder: Path) -> Path:
    """A ~200-piece SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3)."""
    from embeddinggemma_jax.text.tokenizer import train_bpe

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tokenizer.model"
    if model.exists():
        return model
    lines = []
    for r in records(100, 0):
        lines += [r["query"], *r["positive"].split("\n"), f"title: {r['title']} | text:"]
    lines += [
        "task: search result | query:",
        "title: none | text:",
        "task: code retrieval | query:",
    ]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines * 3) + "\n")
    train_bpe(
        corpus,
        folder / "tokenizer",
        200,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        num_threads=1,
    )
    return model


def tiny_config(tmp: Path, *, num_steps: int = 3, with_eval: bool = False, **overrides):
    """configs/tiny.py pointed at synthetic data and a tiny tokenizer under `tmp`."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("tiny_config", repo / "configs" / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    rows = records()
    with c.unlocked():
        c.num_steps = num_steps
        c.tokenizer = str(train_sentencepiece(tmp / "spm"))
        c.train_data = str(write_jsonl(tmp / "data" / "train.jsonl", rows))
        if with_eval:
            c.eval.task = str(write_beir(tmp / "data" / "beir", rows[:16]))
            c.eval.query_prompt = "query"
        for key, value in overrides.items():
            node = c
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    return c
