"""Evaluate a model on tasks at several Matryoshka widths.

    python -m embeddinggemma_jax.evaluate --model PATH --tasks t1,t2 --dims 768,512,256,128 \\
        --output report.json

PATH is a sentence-transformers / Hugging Face folder, a hub id, or an Orbax checkpoint directory
written by training (a step directory, or the workdir: latest step) - whatever
`Embedder.from_pretrained` loads. Each task is a built-in name (`eval.tasks.BUILTIN_TASKS`) or a
task folder (layout in `eval.tasks`). Prints a task x dimension table of main scores and writes
the full report as JSON plus a PNG plot of main score against dimension (`--plot`, default: the
report path with a .png suffix).

Every width comes from one encoding per text: the full-width embedding truncated and
re-normalised, which is what `Embedder.encode(dim=...)` and sentence-transformers' `truncate_dim`
compute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax.eval.tasks import BUILTIN_TASKS, Task, TruncatingEncoder, get_task


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
    """Runs `tasks` on an `Embedder`; returns the report (see `main` for its layout)."""
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_report(report: dict, path: str | Path) -> Path:
    """PNG of each task's main score against embedding width (log2 axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    dims = report["dims"]
    for name, entry in report["tasks"].items():
        xs = sorted(dims)
        ax.plot(xs, [entry["results"][str(d)]["main_score"] for d in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(dims), [str(d) for d in sorted(dims)])
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("main score")
    ax.set_title(report.get("model", ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one dimension")
    return values


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m embeddinggemma_jax.evaluate",
        description="Evaluate an embedding model on local/built-in tasks at several dimensions.",
    )
    parser.add_argument("--model", required=True, help="ST/HF folder, hub id or Orbax checkpoint")
    parser.add_argument(
        "--tasks",
        default="stdlib-code-search",
        help=f"comma-separated built-in names ({', '.join(BUILTIN_TASKS)}) or task folders",
    )
    parser.add_argument("--dims", type=_int_list, default=None, help="e.g. 768,512,256,128")
    parser.add_argument("--output", default=None, help="report JSON path")
    parser.add_argument("--plot", default=None, help="PNG path (default: --output with .png)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per text")
    parser.add_argument("--progress", action="store_true", help="show encoding progress bars")
    args = parser.parse_args(argv)

    from embeddinggemma_jax.embedder import Embedder

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        parser.error("--tasks is empty")
    start = time.perf_counter()
    loaded = [get_task(t) for t in tasks]  # fail on a bad task before loading the model
    embedder = Embedder.from_pretrained(args.model, dtype=args.dtype, max_length=args.max_length)
    report = evaluate_embedder(
        embedder,
        loaded,
        args.dims,
        batch_size=args.batch_size,
        show_progress=args.progress,
        log=lambda line: print(line, file=sys.stderr),
    )
    report = {"model": str(args.model), **report, "wall_s": round(time.perf_counter() - start, 2)}
    print(format_table(report))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        plot = plot_report(report, args.plot or out.with_suffix(".png"))
        print(f"wrote {out} and {plot}")
    elif args.plot:
        print(f"wrote {plot_report(report, args.plot)}")
    return report


if __name__ == "__main__":
    main()
