"""Float vs post-training quantization (PTQ): one model's main scores on built-in tasks at several
Matryoshka widths, float32 and each fake-quantized scheme (issue 13).

    EMBEDDINGGEMMA_300M=$(../shared/tools/fetch-embeddinggemma | tail -n1)
    flock /tmp/egj-heavy.lock .venv/bin/python bench/quant_eval.py --model $EMBEDDINGGEMMA_300M \
        --max-queries 200 --gguf-sizes --json /tmp/quant_eval.json
    .venv/bin/python bench/quant_eval.py --model PATH --tasks lee-sts --schemes q8_0   # quick

Each scheme is `Embedder.from_pretrained(model, quant=scheme)`: no training, the weights
fake-quantized exactly as that scheme's exports store them (`evaluate --quant` scores the same
thing). Every width comes from one encoding per text (truncated and re-normalised), as
`evaluate` does. Scores are printed on MTEB's 0-100 scale, with each scheme's difference from
float32 in points. `--max-queries N` caps each retrieval task to fit a CPU budget (N queries
chosen by a hash of their id, and a corpus of their relevant documents topped up with other
documents, chosen likewise, to N); the table says so. The other tasks always run whole.

GGUF file sizes: `--gguf-dir DIR` lists the *.gguf files already there; `--gguf-sizes` writes
the model's f32 / f16 / q8_0 / q4_0 GGUF files into a temporary folder (next to `--json`, or the
system's temp dir), measures and deletes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from embeddinggemma_jax.embedder import Embedder  # noqa: E402
from embeddinggemma_jax.eval import evaluate_embedder, get_task  # noqa: E402
from embeddinggemma_jax.eval.builtin import _stable_hash  # noqa: E402
from embeddinggemma_jax.eval.tasks import RetrievalTask  # noqa: E402
from embeddinggemma_jax.quant import SCHEMES  # noqa: E402
from embeddinggemma_jax.tables import format_table  # noqa: E402

DEFAULT_TASKS = "stdlib-code-search,lee-sts,humanize-bitext"
GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.environ.get("EMBEDDINGGEMMA_300M"),
                   help="anything Embedder.from_pretrained loads (default: $EMBEDDINGGEMMA_300M)")  # fmt: skip
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated built-in names")
    p.add_argument("--dims", type=_int_list, default=[768, 512, 256, 128])
    p.add_argument("--schemes", default=",".join(SCHEMES), help="compared against float32")
    p.add_argument("--max-queries", type=int, default=None, help="retrieval cap (see above)")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per text")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--gguf-dir", default=None, help="report the sizes of the *.gguf files here")
    p.add_argument("--gguf-sizes", action="store_true", help="export each GGUF type and measure")
    p.add_argument("--json", default=None, help="write the scores, sizes and environment here")
    return p


def cap_task(task, n: int | None):
    """A retrieval task cut to `n` queries and about `n` documents (the same ones every run)."""
    if n is None or not isinstance(task, RetrievalTask):
        return task
    queries = sorted(task.queries, key=_stable_hash)[:n]
    relevant = {d for q in queries for d in task.qrels[q] if d in task.corpus}
    others = sorted((d for d in task.corpus if d not in relevant), key=_stable_hash)
    docs = relevant | set(others[: max(0, n - len(relevant))])
    return dataclasses.replace(
        task,
        queries={q: task.queries[q] for q in queries},
        corpus={d: v for d, v in task.corpus.items() if d in docs},
        qrels={q: task.qrels[q] for q in queries},
    )


def task_sizes(task) -> str:
    if isinstance(task, RetrievalTask):
        return f"{len(task.queries)} queries, {len(task.corpus)} documents"
    for f in ("sentence1", "texts"):
        if hasattr(task, f):
            return f"{len(getattr(task, f))} {'pairs' if f == 'sentence1' else 'texts'}"
    return ""


def score_table(reports: dict[str, dict], dims: list[int]) -> str:
    """(task, dim) rows; float32 then each scheme with its difference, 0-100 scale."""
    names = list(reports)
    base = reports["float32"]
    header = ["task", "metric", "dim", "float32"]
    for s in names[1:]:
        header += [s, "Δ"]
    rows, deltas = [], {s: {d: [] for d in dims} for s in names[1:]}
    for task, entry in base["tasks"].items():
        for d in dims:
            f = 100 * entry["results"][str(d)]["main_score"]
            row = [task, entry["main_score"], str(d), f"{f:.2f}"]
            for s in names[1:]:
                q = 100 * reports[s]["tasks"][task]["results"][str(d)]["main_score"]
                deltas[s][d].append(q - f)
                row += [f"{q:.2f}", f"{q - f:+.2f}"]
            rows.append(row)
    for d in dims:
        row = ["mean Δ", "", str(d), ""]
        for s in names[1:]:
            mean = sum(deltas[s][d]) / len(deltas[s][d])
            row += ["", f"{mean:+.2f}"]
        rows.append(row)
    return format_table(header, rows, align="lll")


def gguf_sizes(args, embedder) -> dict[str, int]:
    if args.gguf_dir:
        return {p.name: p.stat().st_size for p in sorted(Path(args.gguf_dir).glob("*.gguf"))}
    import jax

    from embeddinggemma_jax.interop.gguf_export import write_gguf

    params = jax.device_get(embedder.params)
    where = Path(args.json).resolve().parent if args.json else None
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="quant_eval_gguf_", dir=where) as tmp:
        for quant in GGUF_TYPES:
            path = write_gguf(Path(tmp) / f"model-{quant}.gguf", params, embedder.config,
                              tokenizer_file=embedder.tokenizer.path, quant=quant,
                              progress=False)  # fmt: skip
            sizes[path.name] = path.stat().st_size
            path.unlink()
    return sizes


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.model:
        raise SystemExit("--model (or $EMBEDDINGGEMMA_300M) is required")
    schemes = [s for s in args.schemes.split(",") if s]
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        raise SystemExit(f"--schemes: unknown {unknown}; known: {', '.join(SCHEMES)}")
    started = datetime.now(timezone.utc)
    print(f"load average before: {common.load_average()}", flush=True)
    tasks = [cap_task(get_task(t), args.max_queries) for t in args.tasks.split(",") if t]
    for t in tasks:
        print(f"{t.name}: {task_sizes(t)}", flush=True)
    reports, seconds, float_embedder = {}, {}, None
    for scheme in [None, *schemes]:
        label = scheme or "float32"
        start = time.perf_counter()
        embedder = Embedder.from_pretrained(args.model, quant=scheme, max_length=args.max_length)
        float_embedder = float_embedder or embedder
        reports[label] = evaluate_embedder(embedder, tasks, args.dims,
                                           batch_size=args.batch_size,
                                           log=lambda line, lb=label: print(f"[{lb}] {line}",
                                                                            flush=True))  # fmt: skip
        seconds[label] = round(time.perf_counter() - start, 1)
        print(f"[{label}] {seconds[label]} s", flush=True)
    table = score_table(reports, args.dims)
    print()
    print(table)
    print(f"\nseconds per model: {seconds}")
    if args.max_queries:
        print(f"(retrieval capped at {args.max_queries} queries; corpus sizes above)")
    sizes = {}
    if args.gguf_dir or args.gguf_sizes:
        sizes = gguf_sizes(args, float_embedder)
        print()
        print(format_table(["GGUF", "MiB"], [[k, f"{v / 2**20:.1f}"] for k, v in sizes.items()]))
    print(f"load average after: {common.load_average()}")
    out = {
        "model": str(args.model),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "tasks": {t.name: task_sizes(t) for t in tasks},
        "max_queries": args.max_queries,
        "reports": reports,
        "seconds": seconds,
        "gguf_bytes": sizes,
        "table": table,
        "environment": common.environment(["jax", "jaxlib", "flax", "gguf"]),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
