"""Evaluate a model on tasks at several Matryoshka widths, or every checkpoint of a training run.

    python -m embeddinggemma_jax.evaluate --model PATH --tasks t1,t2 --dims 768,512,256,128 \\
        --output report.json
    python -m embeddinggemma_jax.evaluate --model runs/quickstart --steps all --tasks t1
    python -m embeddinggemma_jax.evaluate --model runs/quickstart --steps latest --watch

PATH is a sentence-transformers / Hugging Face folder, a hub id, or an Orbax checkpoint written by
training (a run directory, its checkpoints/ folder or one step folder; relative, with `~` or a
gs:// URL) - whatever `Embedder.from_pretrained` loads. Each task is a built-in name
(`eval.builtin.BUILTIN_TASKS`) or a task folder (layout in `eval.tasks`).

One model: prints a task x dimension table of main scores and writes the full report as JSON
(`--output`) plus a PNG of main score against dimension (`--plot`, default: the report path with
a .png suffix).

A run (`--steps all|latest|best|N,M,...`): evaluates each chosen complete checkpoint, compiling
once (later steps swap parameters only), prints a step x task table, and writes the rows as JSON
(default `RUN/eval_offline.json`) with a PNG of main score against step, and the scores to the
run's TensorBoard as the `eval_offline` split. `--watch` then keeps evaluating each new
checkpoint as the run writes it, appending to the same files, until the run's last step
(`num_steps`) or Ctrl-C; a rerun with `--watch` continues after the steps the JSON already holds.

The evaluation itself is the library's `eval.runner.evaluate_embedder` and
`eval.checkpoints.evaluate_steps`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax import cli
from embeddinggemma_jax.cache import write_atomic
from embeddinggemma_jax.errors import LocatedError
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


def _write_json(path: Path, value) -> None:
    """Written under a temporary name and renamed: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
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
    parser.add_argument(
        "--quant",
        default=None,
        choices=("q8_0", "q4_0", "mixed"),
        help="evaluate the fake-quantized model (exactly the numerics the exports of that scheme hold)",
    )
    parser.add_argument("--progress", action="store_true", help="show encoding progress bars")
    parser.add_argument(
        "--steps", default=None, help="evaluate a training run: all, latest, best or N,M,..."
    )
    parser.add_argument(
        "--watch", action="store_true", help="with a run: also each new checkpoint as it lands"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=30.0, help="--watch: how often to look"
    )
    parser.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="with a run: do not write the eval_offline split to its TensorBoard",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """The report (one model) or {"model", "rows": [one report per step]} (a run)."""
    args = _parser().parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise LocatedError("is empty", where="--tasks")
    if args.watch and args.steps is None:
        args.steps = "all"
    start = time.perf_counter()
    loaded = [get_task(t) for t in tasks]  # fail on a bad task before loading the model
    if args.steps is not None:
        return _evaluate_run(args, loaded)

    from embeddinggemma_jax.embedder import Embedder

    embedder = Embedder.from_pretrained(
        args.model, dtype=args.dtype, max_length=args.max_length, quant=args.quant
    )
    report = evaluate_embedder(
        embedder,
        loaded,
        args.dims,
        batch_size=args.batch_size,
        show_progress=args.progress,
        log=_log,
    )
    report = {"model": str(args.model), **report, "wall_s": round(time.perf_counter() - start, 2)}
    print(format_table(report))
    if args.output:
        out = Path(args.output)
        _write_json(out, report)
        plot = plot_report(report, args.plot or out.with_suffix(".png"))
        print(f"wrote {out} and {plot}")
    elif args.plot:
        print(f"wrote {plot_report(report, args.plot)}")
    return report


def _evaluate_run(args, loaded) -> dict:
    from embeddinggemma_jax.eval import checkpoints
    from embeddinggemma_jax.eval.runner import format_step_table, plot_steps

    run = checkpoints.run_dir(args.model)
    # A missing folder or step fails here, before anything is written.
    if args.watch:
        checkpoints.complete_steps(args.model)
    else:
        checkpoints.select_steps(args.model, args.steps)
    out = Path(args.output) if args.output else Path(run) / "eval_offline.json"
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    rows: list[dict] = []
    if args.watch and out.is_file():  # continue the same files
        rows = json.loads(out.read_text(encoding="utf-8")).get("rows", [])
        checkpoints.check_tasks_match(rows, [t.name for t in loaded], args.dims)
    writer = None
    embedders = checkpoints.StepEmbedders(
        dtype=args.dtype, max_length=args.max_length, quant=args.quant
    )
    try:
        for row in checkpoints.evaluate_steps(
            args.model,
            loaded,
            args.dims,
            steps=args.steps,
            watch=args.watch,
            poll_seconds=args.poll_seconds,
            skip=[r["step"] for r in rows],
            embedders=embedders,
            batch_size=args.batch_size,
            show_progress=args.progress,
            log=_log,
        ):
            rows.append(row)
            rows.sort(key=lambda r: r["step"])
            _write_json(out, {"model": str(args.model), "rows": rows})
            plot_steps(rows, plot, title=str(args.model))
            if writer is None and not args.no_tensorboard and isinstance(run, Path):
                from tensorboardX import SummaryWriter

                writer = SummaryWriter(str(run / "tensorboard"))
            if writer is not None:
                for name, entry in row["tasks"].items():
                    for dim, scores in entry["results"].items():
                        # TensorBoard would write "@" as "_", as in the trainer's "metric@dim"
                        tag = f"eval_offline/{name}/{entry['main_score']}_{dim}"
                        writer.add_scalar(tag, scores["main_score"], row["step"])
                writer.flush()
            if args.watch:
                _log(f"step {row['step']} done; wrote {out} and {plot}")
    except KeyboardInterrupt:
        _log("stopped (Ctrl-C); the files hold every step evaluated so far")
    finally:
        if writer is not None:
            writer.close()
    print(format_step_table(rows))
    if rows:
        print(f"wrote {out} and {plot}")
    return {"model": str(args.model), "rows": rows}


if __name__ == "__main__":
    cli.command(main)()
