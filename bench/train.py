"""Train-step throughput: our jitted finetune step against a PyTorch sentence-transformers-style
step (bench/train_peer.py), same shapes, same machine, same run; optionally GradCache's overhead
and the largest batch GradCache fits (issue 7).

    python bench/train.py                      # GPU: 300m, random weights, bf16, 64 pairs x 256
    python bench/train.py --tiny               # CPU smoke run: tiny model, 4 pairs x 32 tokens
    python bench/train.py --shapes 64x256,128x128 --scan-layers --grad-cache-overhead
    python bench/train.py --no-peer --max-batch-search --grad-cache 16

Ours: `train.step.make_train_step` (the trainer's step: sharded jit, donated state) over a
one-device mesh, with the EmbeddingGemma objective (`losses.embeddinggemma_loss`: in-batch
contrastive + spread-out, Matryoshka) and AdamW (`train.optimizer`), float32 params, bfloat16
compute. The gradient is `train.gradcache.full_batch_value_and_grad` (whole batch at once), or
with `--grad-cache CHUNK` `gradcache_value_and_grad` (same loss and gradients, activations of
CHUNK rows at a time). `--scan-layers` sets `ModelConfig.scan_layers` (lax.scan over the
repeating layer pattern: faster compiles, same results). The peer: transformers'
Gemma3TextModel with mean pooling, the two dense head layers and normalisation, in-batch
contrastive cross-entropy (temperature 0.05), torch.optim.AdamW, bf16 autocast, SDPA attention.
Every text is exactly `--length` tokens (random ids, no padding), so both sides do the same work.
`--shapes BxT,...` runs every pairs x tokens shape in one invocation (one row per shape and run).

Prints steps/s, tokens/s (queries + documents), MFU (train FLOPs = 3 x forward FLOPs of
`train.perf.forward_flops`, against the device's dense bf16 peak from `train.perf.PEAK_FLOPS`;
"n/a" on CPU; GradCache's extra forward is not counted, so it shows as lower MFU) and the ratio
ours / peer. Each run does `--warmup` untimed steps (compilation) then `--steps` timed ones.

`--grad-cache-overhead`: ours runs twice per shape, without and with GradCache (chunk
`--grad-cache`, default batch // 4), and the ratio of step times cached / uncached is the
"GradCache overhead" (issue 7's target: <= 1.4x). The peer runs once per shape.

`--max-batch-search`: with GradCache on (chunk as above, fixed), the batch doubles from each
shape's batch until a step runs out of device memory (XLA RESOURCE_EXHAUSTED), the batch exceeds
`--max-batch`, or the next size would not finish within `--search-seconds` (its time is predicted
as twice the last size's); each size compiles (1 untimed step) and times 2 steps. Reports the
largest batch that ran and its step time.

Rows print as they finish and `--json` (if given) is rewritten after each, so a run cut off by a
time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny model and shapes")
    p.add_argument("--batch", type=int, default=None, help="pairs per step (default 64; tiny 4)")
    p.add_argument(
        "--length", type=int, default=None, help="tokens per text (default 256; tiny 32)"
    )
    p.add_argument(
        "--shapes", default=None, help="PAIRSxTOKENS,... (e.g. 64x256,128x128): one row each"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; tiny 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--remat", default="none", help="ours: none | full | dots_saveable")
    p.add_argument("--attention", default="auto", help="ours: auto | xla | banded | cudnn")
    p.add_argument("--scan-layers", action="store_true", help="ours: ModelConfig.scan_layers")
    p.add_argument("--grad-cache", type=int, default=None, help="ours: GradCache chunk (rows)")
    p.add_argument(
        "--grad-cache-overhead",
        action="store_true",
        help="ours without and with GradCache at each shape; prints cached / uncached",
    )
    p.add_argument(
        "--max-batch-search",
        action="store_true",
        help="ours with GradCache: double the batch until out of memory",
    )
    p.add_argument("--max-batch", type=int, default=65536, help="search cap (pairs)")
    p.add_argument("--search-seconds", type=float, default=240.0, help="time budget of each search")
    p.add_argument("--no-peer", action="store_true", help="skip bench/train_peer.py")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def settings(args) -> dict:
    return {
        "batch": args.batch or (4 if args.tiny else 64),
        "length": args.length or (32 if args.tiny else 256),
        "steps": args.steps or (3 if args.tiny else 20),
        "warmup": args.warmup,
        "dtype": args.dtype,
        "tiny": bool(args.tiny),
        "remat": args.remat,
        "attention": args.attention,
        "scan_layers": bool(args.scan_layers),
    }


def shape_list(args, s: dict) -> list[dict]:
    """One settings dict per `--shapes` entry (default: the single `--batch` x `--length`)."""
    if not args.shapes:
        return [s]
    out = []
    for item in args.shapes.split(","):
        b, t = item.lower().split("x")
        out.append({**s, "batch": int(b), "length": int(t)})
    return out


def default_chunk(args, batch: int) -> int:
    return args.grad_cache or max(1, batch // 4)


def model_config(
    tiny: bool, dtype: str, remat: str = "none", attention: str = "auto", scan_layers=False
):
    from embeddinggemma_jax.model import ModelConfig

    preset = ModelConfig.tiny if tiny else ModelConfig.embeddinggemma_300m
    return preset(dtype=dtype, remat=remat, attention_impl=attention, scan_layers=scan_layers)


def build_step(cfg, grad_cache: int | None):
    """(jitted train step, fresh state) for `cfg`; GradCache with `grad_cache` rows per chunk."""
    import jax

    from embeddinggemma_jax import losses, parallel
    from embeddinggemma_jax.model import EmbeddingGemma, init_params, param_logical_axes
    from embeddinggemma_jax.model import param_shapes as shapes_of
    from embeddinggemma_jax.train import gradcache
    from embeddinggemma_jax.train.optimizer import make_optimizer
    from embeddinggemma_jax.train.state import create_state, state_shardings
    from embeddinggemma_jax.train.step import TrainTask, make_train_step

    model = EmbeddingGemma(cfg)
    loss_fn = losses.embeddinggemma_loss_fn(matryoshka_dims=cfg.matryoshka_dims)

    def embed(p, x):
        return model.apply({"params": p}, x["tokens"], x["mask"])

    if grad_cache is None:
        value_and_grad = gradcache.full_batch_value_and_grad(embed, loss_fn)
    else:
        value_and_grad = gradcache.gradcache_value_and_grad(embed, loss_fn, grad_cache)

    class Bench(TrainTask):
        def param_shapes(self):
            return shapes_of(cfg)

        def param_logical_axes(self):
            return param_logical_axes(cfg)

        def initial_params(self, rng, shardings):
            return jax.jit(lambda r: init_params(cfg, r), out_shardings=shardings)(rng)

        def data_iterator(self, start_step=0):
            raise NotImplementedError

        def value_and_grad(self, params, batch, rng, frozen):
            roles = {"query": batch["query"], "positive": batch["positive"]}
            return value_and_grad(params, roles, None)

    task = Bench()
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    tx, lr_fn = make_optimizer(dict(learning_rate=2e-5, warmup_steps=0), 1000)
    p_shapes = task.param_shapes()
    p_sh = parallel.param_shardings(task.param_logical_axes(), p_shapes, mesh)
    st_sh = state_shardings(tx, p_shapes, p_sh, mesh)
    state = create_state(task.initial_params(jax.random.key(0), p_sh), tx, st_sh, seed=0)
    return make_train_step(task, tx, lr_fn, mesh, parallel.DEFAULT_RULES, st_sh), state


def random_batch(cfg, b: int, t: int) -> dict:
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)

    def role():
        tokens = rng.integers(4, cfg.vocab_size, (b, t)).astype(np.int32)
        tokens[:, 0], tokens[:, -1] = 2, 1
        return {"tokens": jnp.asarray(tokens), "mask": jnp.ones((b, t), bool)}

    return {"query": role(), "positive": role()}


def time_steps(step, state, batch, warmup: int, steps: int) -> tuple[float, float, float]:
    """(seconds of the `warmup` steps, seconds per timed step, last loss)."""
    import jax

    t0 = time.perf_counter()
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return first, (time.perf_counter() - t0) / steps, float(metrics["loss"])


def run_ours(s: dict, grad_cache: int | None = None) -> dict:
    import jax
    import numpy as np

    from embeddinggemma_jax.train import perf

    cfg = model_config(s["tiny"], s["dtype"], s["remat"], s["attention"], s["scan_layers"])
    step, state = build_step(cfg, grad_cache)
    b, t = s["batch"], s["length"]
    first, dt, loss = time_steps(step, state, random_batch(cfg, b, t), s["warmup"], s["steps"])
    flops = 3.0 * perf.forward_flops(cfg, np.full(2 * b, t))
    peak = perf.peak_flops_per_device(s["dtype"])
    return {
        "device": jax.devices()[0].device_kind,
        "batch": b,
        "length": t,
        "attention": s["attention"],
        "remat": s["remat"],
        "scan_layers": s["scan_layers"],
        "grad_cache": grad_cache,
        "step_s": dt,
        "warmup_s": first,
        "tokens_per_s": 2 * b * t / dt,
        "train_flops_per_step": flops,
        "mfu": flops / dt / peak if peak else None,
        "loss": loss,
    }


def run_peer(s: dict) -> dict:
    cmd = [sys.executable, str(HERE / "train_peer.py")]
    cmd += ["--batch", str(s["batch"]), "--length", str(s["length"]), "--steps", str(s["steps"])]
    cmd += ["--warmup", str(s["warmup"]), "--dtype", s["dtype"]]
    if s["tiny"]:
        cmd.append("--tiny")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"train_peer.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def is_oom(err: BaseException) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def free_memory() -> None:
    import jax

    gc.collect()
    jax.clear_caches()


def max_batch_search(s: dict, chunk: int, cap: int, budget_s: float) -> dict:
    """Doubles the batch from `s["batch"]` with GradCache (`chunk` rows) until OOM, `cap` or the
    time budget; each size: 1 untimed step (compile) and 2 timed ones."""
    tried, largest, b, stop = [], None, s["batch"], "cap"
    t_start, last_s = time.perf_counter(), 0.0
    while b <= cap:
        if largest is not None and time.perf_counter() - t_start + 2 * last_s > budget_s:
            stop = "time"
            break
        t0 = time.perf_counter()
        try:
            r = run_ours({**s, "batch": b, "warmup": 1, "steps": 2}, grad_cache=chunk)
        except Exception as err:
            if not is_oom(err):
                raise
            tried.append({"batch": b, "oom": str(err).strip().splitlines()[0][:300]})
            stop = "oom"
            break
        finally:
            free_memory()
        last_s = time.perf_counter() - t0
        tried.append(r)
        largest = r
        print_row(f"ours GC {chunk} (search)", r, r["mfu"])
        b *= 2
    return {
        "length": s["length"],
        "chunk": chunk,
        "cap": cap,
        "stop": stop,
        "tried": tried,
        "largest": largest,
    }


HEADER = (
    f"{'':26}{'pairs x T':>11}{'step ms':>10}{'steps/s':>9}{'tokens/s':>12}{'MFU':>7}{'first s':>9}"
)


def print_row(name: str, r: dict, mfu: float | None, shape: tuple[int, int] | None = None):
    b, t = shape or (r["batch"], r["length"])
    mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
    print(
        f"{name:26}{f'{b}x{t}':>11}{1000 * r['step_s']:>10.1f}{1 / r['step_s']:>9.2f}"
        f"{r['tokens_per_s']:>12,.0f}{mfu_text:>7}{r['warmup_s']:>9.1f}",
        flush=True,
    )


def ours_name(grad_cache: int | None) -> str:
    return "ours (JAX)" if grad_cache is None else f"ours (JAX, GradCache {grad_cache})"


def run_shape(s: dict, args) -> dict:
    """Ours (one run, or uncached + cached with --grad-cache-overhead) and the peer at one shape."""
    from embeddinggemma_jax.train import perf

    chunks = (
        [None, default_chunk(args, s["batch"])] if args.grad_cache_overhead else [args.grad_cache]
    )
    ours = []
    for chunk in chunks:
        ours.append(run_ours(s, grad_cache=chunk))
        free_memory()
        print_row(ours_name(chunk), ours[-1], ours[-1]["mfu"])
    row = {"batch": s["batch"], "length": s["length"], "ours": ours, "peer": None}
    if args.grad_cache_overhead:
        row["grad_cache_overhead"] = ours[1]["step_s"] / ours[0]["step_s"]
    if not args.no_peer:
        peer = row["peer"] = run_peer(s)
        peak = perf.peak_flops_per_device(s["dtype"])
        flops = ours[0]["train_flops_per_step"]
        print_row(
            "peer (PyTorch)",
            peer,
            flops / peer["step_s"] / peak if peak else None,
            (s["batch"], s["length"]),
        )
        for r in ours:
            r["ratio_ours_over_peer"] = peer["step_s"] / r["step_s"]
    return row


def summary(result: dict) -> None:
    for row in result["results"]:
        shape = f"{row['batch']} pairs x {row['length']}"
        for r in row["ours"] if row["peer"] else []:
            print(
                f"{shape}: ratio {ours_name(r['grad_cache'])} / peer (tokens/s): "
                f"{r['ratio_ours_over_peer']:.2f}"
            )
        if "grad_cache_overhead" in row:
            print(
                f"{shape}: GradCache overhead (step time cached / uncached): "
                f"{row['grad_cache_overhead']:.2f}x (target <= 1.4x)"
            )
    for search in result["max_batch_search"]:
        big = search["largest"]
        found = f"{big['batch']} pairs, {1000 * big['step_s']:.1f} ms/step" if big else "none ran"
        print(
            f"max batch x {search['length']} (GradCache {search['chunk']}): {found}; "
            f"stopped by {search['stop']}"
        )


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    s = settings(args)
    print(f"settings: {s}", flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = {"settings": s, "results": [], "max_batch_search": []}

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{HEADER}", flush=True)
    for shape in shape_list(args, s):
        result["results"].append(run_shape(shape, args))
        save()
    for shape in shape_list(args, s) if args.max_batch_search else []:
        chunk = default_chunk(args, shape["batch"])
        result["max_batch_search"].append(
            max_batch_search(shape, chunk, args.max_batch, args.search_seconds)
        )
        save()
    device = result["results"][0]["ours"][0]["device"]
    print(f"\nload average after: {os.getloadavg()}")
    print(f"device: {device}; {s['dtype']}")
    summary(result)


if __name__ == "__main__":
    main()
