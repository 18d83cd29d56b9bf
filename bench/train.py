"""Train-step throughput: our jitted finetune step against a PyTorch sentence-transformers-style
step (bench/train_peer.py), same shapes, same machine, same run.

    python bench/train.py                      # GPU: 300m, random weights, bf16, 64 pairs x 256
    python bench/train.py --tiny               # CPU smoke run: tiny model, 4 pairs x 32 tokens

Ours: `train.step.make_train_step` (the trainer's step: sharded jit, donated state) over a
one-device mesh, with the EmbeddingGemma objective (`losses.embeddinggemma_loss`: in-batch
contrastive + spread-out, Matryoshka) and AdamW (`train.optimizer`), float32 params, bfloat16
compute, no GradCache (the batch fits). The peer: transformers' Gemma3TextModel with mean pooling,
the two dense head layers and normalisation, in-batch contrastive cross-entropy (temperature
0.05), torch.optim.AdamW, bf16 autocast, SDPA attention. Every text is exactly `--length` tokens
(random ids, no padding), so both sides do the same work.

Prints steps/s, tokens/s (queries + documents), MFU (train FLOPs = 3 x forward FLOPs of
`train.perf.forward_flops`, against the device's dense bf16 peak from `train.perf.PEAK_FLOPS`;
"n/a" on CPU) and the ratio ours / peer. Each side runs `--warmup` untimed steps (compilation)
then `--steps` timed ones. Writes `--json` if given.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; tiny 3)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--remat", default="none", help="ours: none | full | dots_saveable")
    p.add_argument("--attention", default="auto", help="ours: auto | xla | banded | cudnn")
    p.add_argument("--no-peer", action="store_true", help="skip bench/train_peer.py")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def shapes(args) -> dict:
    return {
        "batch": args.batch or (4 if args.tiny else 64),
        "length": args.length or (32 if args.tiny else 256),
        "steps": args.steps or (3 if args.tiny else 20),
        "warmup": args.warmup,
        "dtype": args.dtype,
        "tiny": bool(args.tiny),
    }


def model_config(tiny: bool, dtype: str, remat: str = "none", attention: str = "auto"):
    from embeddinggemma_jax.model import ModelConfig

    preset = ModelConfig.tiny if tiny else ModelConfig.embeddinggemma_300m
    return preset(dtype=dtype, remat=remat, attention_impl=attention)


def run_ours(s: dict, remat: str, attention: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from embeddinggemma_jax import parallel
    from embeddinggemma_jax.model import EmbeddingGemma, init_params, param_logical_axes
    from embeddinggemma_jax.model import param_shapes as shapes_of
    from embeddinggemma_jax.train import perf
    from embeddinggemma_jax.train.gradcache import embeddinggemma_loss_fn, full_batch_value_and_grad
    from embeddinggemma_jax.train.optimizer import make_optimizer
    from embeddinggemma_jax.train.state import create_state, state_shardings
    from embeddinggemma_jax.train.step import TrainTask, make_train_step

    cfg = model_config(s["tiny"], s["dtype"], remat, attention)
    model = EmbeddingGemma(cfg)
    loss_fn = embeddinggemma_loss_fn(matryoshka_dims=cfg.matryoshka_dims)

    def embed(p, x):
        return model.apply({"params": p}, x["tokens"], x["mask"])

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
            return full_batch_value_and_grad(embed, loss_fn)(params, roles, None)

    task = Bench()
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    tx, lr_fn = make_optimizer(dict(learning_rate=2e-5, warmup_steps=0), 1000)
    p_shapes = task.param_shapes()
    p_sh = parallel.param_shardings(task.param_logical_axes(), p_shapes, mesh)
    st_sh = state_shardings(tx, p_shapes, p_sh, mesh)
    state = create_state(task.initial_params(jax.random.key(0), p_sh), tx, st_sh, seed=0)
    step = make_train_step(task, tx, lr_fn, mesh, parallel.DEFAULT_RULES, st_sh)
    b, t = s["batch"], s["length"]
    rng = np.random.default_rng(0)

    def role():
        tokens = rng.integers(4, cfg.vocab_size, (b, t)).astype(np.int32)
        tokens[:, 0], tokens[:, -1] = 2, 1
        return {"tokens": jnp.asarray(tokens), "mask": jnp.ones((b, t), bool)}

    batch = {"query": role(), "positive": role()}
    t0 = time.perf_counter()
    for _ in range(s["warmup"]):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    dt = (time.perf_counter() - t0) / s["steps"]
    flops = 3.0 * perf.forward_flops(cfg, np.full(2 * b, t))
    peak = perf.peak_flops_per_device(s["dtype"])
    return {
        "device": jax.devices()[0].device_kind,
        "attention": attention,
        "remat": remat,
        "step_s": dt,
        "warmup_s": first,
        "tokens_per_s": 2 * b * t / dt,
        "train_flops_per_step": flops,
        "mfu": flops / dt / peak if peak else None,
        "loss": float(metrics["loss"]),
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


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    s = shapes(args)
    print(f"shapes: {s}", flush=True)
    print(f"load average before: {os.getloadavg()}", flush=True)
    ours = run_ours(s, args.remat, args.attention)
    peer = None if args.no_peer else run_peer(s)
    print(f"load average after: {os.getloadavg()}")
    from embeddinggemma_jax.train import perf

    peer_mfu = None
    if peer is not None:
        peak = perf.peak_flops_per_device(s["dtype"])
        peer_mfu = ours["train_flops_per_step"] / peer["step_s"] / peak if peak else None
    rows = [("ours (JAX)", ours, ours["mfu"])]
    if peer is not None:
        rows.append(("peer (PyTorch)", peer, peer_mfu))
    print(f"\ndevice: {ours['device']}; {s['batch']} pairs x {s['length']} tokens, {s['dtype']}")
    print(f"{'':16}{'step ms':>10}{'steps/s':>10}{'tokens/s':>12}{'MFU':>8}{'first steps s':>15}")
    for name, r, mfu in rows:
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
        print(
            f"{name:16}{1000 * r['step_s']:>10.1f}{1 / r['step_s']:>10.2f}"
            f"{r['tokens_per_s']:>12,.0f}{mfu_text:>8}{r['warmup_s']:>15.1f}"
        )
    result = {"shapes": s, "ours": ours, "peer": peer}
    if peer is not None:
        result["ratio_ours_over_peer"] = peer["step_s"] / ours["step_s"]
        print(f"ratio ours / peer (tokens/s): {result['ratio_ours_over_peer']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
