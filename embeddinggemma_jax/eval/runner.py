"""Running tasks on a model: `evaluate_embedder` scores an `Embedder` on tasks at several
Matryoshka widths and returns a report; `format_table` and `plot_report` show it.

Report layout::

    {"dims": [768, 256],
     "tasks": {name: {"type": "Retrieval", "main_score": "ndcg_at_10",
                      "results": {"768": {metric: value, ..., "main_score": value}, ...},
                      "seconds": 1.2}}}

Every width comes from one encoding per text: the full-width embedding truncated and
re-normalised, which is what `Embedder.encode(dim=...)` and sentence-transformers'
`truncate_dim` compute.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax import tables
from embeddinggemma_jax.eval.registry import get_task
from embeddinggemma_jax.eval.tasks import Task, TruncatingEncoder

__all__ = [
    "default_dims",
    "embedder_encode_fn",
    "evaluate_embedder",
    "format_step_table",
    "format_table",
    "plot_report",
    "plot_steps",
]


def default_dims(embedder) -> list[int]:
    """The model's full width and its Matryoshka widths, widest first."""
    full = embedder.config.output_dim
    dims = {full, *(d for d in getattr(embedder.config, "matryoshka_dims", ()) if d <= full)}
    return sorted(dims, reverse=True)


def embedder_encode_fn(embedder, batch_size: int = 32, show_progress: bool = False):
    """`encode_fn(texts, prompt_name, dim)` for `Task.evaluate`, backed by an `Embedder`."""

    def encode(texts, prompt_name, dim):
        return embedder.encode(
            list(texts),
            prompt_name=prompt_name,
            dim=dim,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    return encode


def evaluate_embedder(
    embedder,
    tasks: Sequence[Task | str],
    dims: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    show_progress: bool = False,
    log=print,
) -> dict:
    """Runs `tasks` (objects, built-in names or folders) on an `Embedder`; returns the report."""
    dims = list(dims) if dims else default_dims(embedder)
    full = embedder.config.output_dim
    bad = [d for d in dims if not 0 < d <= full]
    if bad:
        raise ValueError(f"dims {bad} are outside 1..{full} (the model's output width)")
    loaded = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    names = [t.name for t in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names: {names}")
    report: dict = {"dims": dims, "tasks": {}}
    for task in loaded:
        start = time.perf_counter()
        encode = TruncatingEncoder(embedder_encode_fn(embedder, batch_size, show_progress), full)
        results = task.evaluate(encode, dims)
        report["tasks"][task.name] = {
            "type": task.type,
            "main_score": task.main_score,
            "results": {str(d): results[d] for d in dims},
            "seconds": round(time.perf_counter() - start, 2),
        }
        if log:
            main = ", ".join(f"{d}: {results[d]['main_score']:.4f}" for d in dims)
            log(f"{task.name} ({task.type}, {task.main_score}) {main}")
    return report


def format_table(report: dict) -> str:
    """Task x dimension table of main scores."""
    dims = [str(d) for d in report["dims"]]
    rows = [["task", "metric", *dims]]
    for name, entry in report["tasks"].items():
        values = [f"{entry['results'][d]['main_score']:.4f}" for d in dims]
        rows.append([name, entry["main_score"], *values])
    return tables.format_table(rows[0], rows[1:], align="ll")


def step_columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(task, width) of every main score in a run's report rows, in first-seen order."""
    return list(
        dict.fromkeys((t, d) for r in rows for t in r["tasks"] for d in map(str, r["dims"]))
    )


def format_step_table(rows: Sequence[dict]) -> str:
    """Step x task table of main scores (one column per task and width: ``task@dim``)."""
    columns = step_columns(rows)
    table = [["step", *(f"{t}@{d}" for t, d in columns)]]
    for r in rows:
        cells = [r["tasks"].get(t, {}).get("results", {}).get(d) for t, d in columns]
        table.append(
            [str(r["step"]), *("-" if c is None else f"{c['main_score']:.4f}" for c in cells)]
        )
    return tables.format_table(table[0], table[1:], align="l")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_plot(path: str | Path, xlabel: str, title: str, draw) -> Path:
    """A PNG at `path` of main scores that ``draw(ax)`` plots, one labelled line per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("main score")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_steps(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """PNG of each task's main score (at each width) against the training step."""

    def draw(ax):
        for task, dim in step_columns(rows):
            points = [(r["step"], r["tasks"][task]["results"][dim]["main_score"]) for r in rows
                      if dim in r["tasks"].get(task, {}).get("results", {})]  # fmt: skip
            ax.plot(*zip(*points), marker="o", label=f"{task} @{dim}")

    return _save_plot(path, "training step", title, draw)


def plot_report(report: dict, path: str | Path) -> Path:
    """PNG of each task's main score against embedding width (log2 axis)."""
    dims = sorted(report["dims"])

    def draw(ax):
        for name, entry in report["tasks"].items():
            ax.plot(
                dims, [entry["results"][str(d)]["main_score"] for d in dims], marker="o", label=name
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])

    return _save_plot(path, "embedding dimension", report.get("model", ""), draw)
