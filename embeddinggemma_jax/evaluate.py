"""Evaluate a model on tasks at several Matryoshka widths.

    python -m embeddinggemma_jax.evaluate --model PATH --tasks t1,t2 --dims 768,512,256,128 \\
        --output report.json

PATH is a sentence-transformers / Hugging Face folder, a hub id, or an Orbax checkpoint directory
written by training (a step directory, or the workdir: latest step) - whatever
`Embedder.from_pretrained` loads. Each task is a built-in name (`eval.builtin.BUILTIN_TASKS`) or
a task folder (layout in `eval.tasks`). Prints a task x dimension table of main scores and writes
the full report as JSON plus a PNG plot of main score against dimension (`--plot`, default: the
report path with a .png suffix).

The evaluation itself is the library's `eval.runner.evaluate_embedder`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax.eval import (
    BUILTIN_TASKS,
    evaluate_embedder,
    format_table,
    get_task,
    plot_report,
)


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
