"""A tiny UL2 stage on real text: docstrings of the running Python's standard library.

The issue's "a tiny UL2 run on the standard-library text lowers held-out decoder loss": a
SentencePiece model trained here on the training modules' docstrings (with `<unusedN>` pieces for
the sentinels and mode tokens, as Gemma's tokenizer has), the UL2 stage run through the generic
`Trainer` with `UL2Task` (configs/ul2_adaptation.py:tiny, two layers, random init), and the decoder
cross-entropy measured on the docstrings of other, held-out modules with fixed corruptions."""

import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from embeddinggemma_jax.data.ul2 import ul2_batches
from embeddinggemma_jax.text.tokenizer import train_bpe
from embeddinggemma_jax.train.ul2 import make_ul2_loss_fn

Trainer = pytest.importorskip("embeddinggemma_jax.train.trainer").Trainer
UL2Task = pytest.importorskip("embeddinggemma_jax.train.ul2").UL2Task

REPO = Path(__file__).resolve().parents[2]

# Disjoint module lists: the held-out text is prose the model has never seen.
TRAIN_MODULES = (
    "argparse",
    "collections",
    "configparser",
    "csv",
    "dataclasses",
    "datetime",
    "email.message",
    "fractions",
    "functools",
    "gettext",
    "heapq",
    "inspect",
    "json",
    "logging",
    "os",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "unittest.case",
    "urllib.parse",
    "zipfile",
)
HELD_OUT_MODULES = ("calendar", "difflib", "optparse", "pprint", "sched", "shlex", "statistics")
VOCAB_SIZE = 1024
NUM_UNUSED = 64  # <unused0>, ...: UL2Task takes its sentinels and mode tokens from these
HELD_OUT_FIRST_INDEX = 10**6  # corruption indices of the held-out examples, fixed
BATCH_SIZE = 16
NUM_STEPS = 120


def docstring_paragraphs(module_names) -> list[str]:
    """Paragraphs (whitespace-normalised, >= 5 words, deduplicated) of the docstrings of each
    module and of its public classes, methods and functions, in a fixed order."""
    out, seen = [], set()
    for name in module_names:
        module = importlib.import_module(name)
        objects = [module]
        for key, value in sorted(vars(module).items()):
            if key.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value):
                objects.append(value)
                objects += [
                    m
                    for k, m in sorted(vars(value).items())
                    if not k.startswith("_") and inspect.isfunction(m)
                ]
            elif inspect.isfunction(value):
                objects.append(value)
        for obj in objects:
            doc = obj.__doc__
            if not isinstance(doc, str):
                continue
            for paragraph in inspect.cleandoc(doc).split("\n\n"):
                paragraph = " ".join(paragraph.split())
                if len(paragraph.split()) >= 5 and paragraph not in seen:
                    seen.add(paragraph)
                    out.append(paragraph)
    return out


def train_sentencepiece(texts: list[str], folder: Path) -> Path:
    """BPE on the training text with Gemma's special ids and `<unusedN>` pieces."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return train_bpe(
        corpus,
        folder / "tokenizer",
        VOCAB_SIZE,
        user_defined_symbols=[f"<unused{i}>" for i in range(NUM_UNUSED)],
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,  # one thread: the same model on every run
    )


def ul2_config(tokenizer: Path, train_jsonl: Path):
    spec = importlib.util.spec_from_file_location("ul2_config", REPO / "configs/ul2_adaptation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    with c.unlocked():
        c.tokenizer = str(tokenizer)
        c.train_data = str(train_jsonl)
        c.num_steps = NUM_STEPS
        c.data.global_batch_size = BATCH_SIZE
        # Two layers learn as much here as four, in half the CPU time.
        c.model.num_layers = 2
        c.model.layer_types = ("local", "global")
        c.optimizer.learning_rate = 5e-3
        c.optimizer.warmup_steps = 10
        c.checkpoint.every = 0
        c.log.every = 50
    return c


def test_tiny_ul2_run_on_stdlib_text_lowers_held_out_loss(tmp_path):
    train_text = docstring_paragraphs(TRAIN_MODULES)
    seen = set(train_text)
    held_out_text = [p for p in docstring_paragraphs(HELD_OUT_MODULES) if p not in seen]
    assert len(train_text) >= NUM_STEPS and len(held_out_text) >= 4 * BATCH_SIZE

    tokenizer = train_sentencepiece(train_text, tmp_path / "spm")
    train_jsonl = tmp_path / "data" / "train.jsonl"
    train_jsonl.parent.mkdir()
    train_jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in train_text))
    config = ul2_config(tokenizer, train_jsonl)
    trainer = Trainer(config, tmp_path / "ul2", task=lambda mesh: UL2Task(config))
    task = trainer.task
    # Sentinels and mode tokens are the tokenizer's own <unusedN> pieces.
    special = (*task.ul2.sentinel_ids, task.ul2.nlu_id, task.ul2.nlg_id, task.ul2.s2s_id)
    assert max(special) < task.tokenizer.vocab_size
    assert task.tokenizer.id_to_piece(task.ul2.sentinel_ids[0]) == "<unused0>"

    # Held-out batches: the held-out modules' text, corrupted by the stage's UL2 config at fixed
    # indices (disjoint from the training indices).
    sequences = [np.asarray(ids, np.int32) for ids in task.tokenizer.encode_pieces(held_out_text)]
    held_out = list(
        ul2_batches(
            sequences,
            task.ul2,
            BATCH_SIZE,
            pad_id=task.tokenizer.pad_id,
            first_index=HELD_OUT_FIRST_INDEX,
        )
    )
    loss_fn = make_ul2_loss_fn(task.model_config)
    metrics_fn = jax.jit(lambda p, b: loss_fn(p, b)[1])

    def held_out_cross_entropy(params) -> float:
        ce_sum = tokens = 0.0
        for batch in held_out:
            m = jax.device_get(metrics_fn(params, batch))
            ce_sum += float(m["cross_entropy"]) * float(m["tokens"])
            tokens += float(m["tokens"])
        return ce_sum / tokens

    trainer.restore_or_init()
    before = held_out_cross_entropy(jax.device_get(trainer.state.params))
    summary = trainer.fit()
    trainer.close()
    assert summary["step"] == NUM_STEPS
    after = held_out_cross_entropy(jax.device_get(trainer.state.params))
    train_losses = [row["loss"] for row in summary["history"]["train"]]
    print(
        f"stdlib docstrings: {len(train_text)} train / {len(held_out_text)} held-out paragraphs, "
        f"{task.tokenizer.vocab_size} pieces; train loss {train_losses[0]:.3f} -> "
        f"{train_losses[-1]:.3f}; held-out decoder cross-entropy {before:.3f} -> {after:.3f}"
    )
    assert np.isfinite(after) and after < 0.85 * before
