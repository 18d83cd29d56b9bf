"""Shared helpers for the training tests: a tiny SentencePiece model, a small synthetic
code-search dataset (JSONL + BEIR eval folder) and tiny configs. Imported by tests/train/test_*.py
and by the subprocess scripts they run."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

VERBS = ["sort", "parse", "read", "write", "merge", "split", "count", "format", "load", "join"]
REPO = Path(__file__).resolve().parents[2]
NOUNS = ["list", "file", "header", "path", "number", "string", "table", "record", "token", "line"]
TIMING = {"tokens_per_s", "steps_per_s", "mfu"}  # wall-clock metrics: differ run to run


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
    from embeddinggemma_jax import readers

    path.parent.mkdir(parents=True, exist_ok=True)
    readers.write_jsonl(path, rows)
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


def load_config(name: str, variant: str = "", **overrides):
    """configs/`name`.py's ``get_config(variant)`` with `overrides` (dotted keys: ``**{"log.every":
    1}``) set."""
    from embeddinggemma_jax import cli

    c = cli.load_config(f"{REPO / 'configs' / name}.py" + (f":{variant}" if variant else ""))
    with c.unlocked():
        c.update_from_flattened_dict(overrides)
    return c


def tiny_config(tmp: Path, *, num_steps: int = 3, with_eval: bool = False, **overrides):
    """configs/tiny.py pointed at synthetic data and a tiny tokenizer under `tmp`."""
    rows = records()
    values = {
        "num_steps": num_steps,
        "tokenizer": str(train_sentencepiece(tmp / "spm")),
        "train_data": str(write_jsonl(tmp / "data" / "train.jsonl", rows)),
    }
    if with_eval:
        values["eval.task"] = str(write_beir(tmp / "data" / "beir", rows[:16]))
        values["eval.query_prompt"] = "query"
    return load_config("tiny", **{**values, **overrides})


def main_inputs(tmp: Path) -> None:
    """The training data and tokenizer of `main_command` under `tmp`."""
    train_sentencepiece(tmp / "spm")
    write_jsonl(tmp / "data" / "train.jsonl", records())


def main_command(tmp: Path, workdir: Path, num_steps: int, *flags: str) -> list[str]:
    """The training CLI on configs/tiny.py (run it from the repo root) for `num_steps` on the
    inputs `main_inputs(tmp)` wrote, then `flags`."""
    return [
        sys.executable,
        "-m",
        "embeddinggemma_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        f"--config.train_data={tmp / 'data' / 'train.jsonl'}",
        f"--config.tokenizer={tmp / 'spm' / 'tokenizer.model'}",
        f"--config.num_steps={num_steps}",
        *flags,
    ]


def train_rows(workdir: Path) -> list[dict]:
    """The run's train rows of metrics.jsonl without the wall-clock figures (`TIMING`)."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows if r["split"] == "train"]


def leaves(tree) -> list:
    """The leaves of `tree` as NumPy arrays, on the host."""
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def assert_iterator_resumes(task, what: str) -> list[dict]:
    """`task`'s data iterator, resumed from its state after one batch, gives the next 3 batches
    again, array for array (`what` names the case). Returns those batches."""
    import numpy as np

    it = task.data_iterator(0)
    next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    resumed = task.data_iterator(0)
    resumed.set_state(state)
    for batch in want:
        got = next(resumed)
        for k in batch:
            np.testing.assert_array_equal(got[k], batch[k], err_msg=f"{what} {k}")
    return want
