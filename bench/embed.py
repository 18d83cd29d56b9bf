"""Encode throughput: our Embedder against sentence-transformers, same texts, same process, same device.

    EMBEDDINGGEMMA_300M=/path/to/embeddinggemma-300m .venv/bin/python bench/embed.py --device cpu
    .venv/bin/python bench/embed.py --model /path --n 16                  # a quick smoke run
    python bench/embed.py --device gpu --random-weights /tmp/eg300m --tokenizer tokenizer.model

CPU: both float32. GPU: both bfloat16 (ours: bf16 compute, float32 norms/softmax; the peer: torch
bf16 weights, SDPA). `--random-weights DIR` builds the 300m architecture with random weights and
writes it as a sentence-transformers folder that both sides load (speed does not depend on the
values; the released weights need not travel to the GPU machine). Both run end to end from Python
strings to normalised numpy embeddings (tokenisation included), with the same batch size and no
prompt, on:
  - fixed lengths: real standard-library text cut to exactly 128 and 512 tokens (BOS/EOS included,
    checked with both tokenizers), so neither side pads;
  - mixed: standard-library docstrings of 8-400 words spread over lengths (bench/common.py).
Each side runs each workload once untimed first: ours compiles there (its "first call" time is
printed); sentence-transformers (SDPA attention) warms up on a few texts. Then `--repeats` timed
passes, best kept. The table gives texts/s, ratio ours/peer, tokens/s, MFU against the best
matmul rate measured here in the benchmark's dtype (XLA or PyTorch, whichever is higher), padding overhead (padded
tokens per real token, recorded from the shapes each side actually ran), cores kept busy (process
CPU time / wall time), and the lowest cosine between our and the peer's embeddings (sanity).

The machine must be otherwise idle for the numbers to mean anything: the load average is
printed before and after. The defaults (128:32, 512:16, 64 mixed texts) aim at about five minutes
on two idle cores; the issue's larger corpus is `--n-mixed 256`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PEER_WARMUP_TEXTS = 4
PACKAGES = ("jax", "jaxlib", "flax", "numpy", "torch", "transformers", "sentence-transformers")


def _parse_fixed(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        try:
            length, count = (int(x) for x in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected LENGTH:COUNT pairs like 128:64,512:32, got {part!r}"
            ) from None
        out.append((length, count))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("EMBEDDINGGEMMA_300M"),
        help="the released sentence-transformers folder (default: $EMBEDDINGGEMMA_300M)",
    )
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--random-weights",
        default=None,
        help="write a random-weight 300m sentence-transformers folder here and benchmark it",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer.model for --random-weights")
    parser.add_argument("--attention", default="auto", help="ours: auto | xla | banded | cudnn")
    parser.add_argument(
        "--pack-length",
        default="auto",
        help="ours: sequence packing row length, 'auto' (512 on CPU/TPU, off on GPU) or 'none'",
    )
    parser.add_argument(
        "--no-scan-layers",
        action="store_true",
        help="ours: unroll the 24 layers (default: lax.scan over the layer pattern)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--fixed",
        type=_parse_fixed,
        default=_parse_fixed("128:32,512:16"),
        help="fixed-length workloads as LENGTH:COUNT (default 128:32,512:16)",
    )
    parser.add_argument("--n-mixed", type=int, default=64, help="texts in the mixed corpus")
    parser.add_argument("--n", type=int, default=None, help="use this many texts in every workload")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes (best is kept)")
    parser.add_argument("--no-peer", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    return parser


class ShapeLog:
    """Records the [B, T] token shapes a forward function is called with."""

    def __init__(self):
        self.shapes: list[tuple[int, int]] = []

    def padded_tokens(self) -> int:
        return sum(b * t for b, t in self.shapes)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.random_weights:
        args.model = common.random_weight_folder(args.random_weights, args.tokenizer)
    if not args.model or not Path(args.model, "model.safetensors").exists():
        sys.exit("need --model (or $EMBEDDINGGEMMA_300M) or --random-weights DIR --tokenizer FILE")
    dtype = "bfloat16" if args.device == "gpu" else "float32"
    if args.n is not None:
        args.fixed = [(length, args.n) for length, _ in args.fixed]
        args.n_mixed = args.n
    load_before = common.load_average()
    env = common.environment(PACKAGES)

    import jax

    from embeddinggemma_jax import Embedder

    t0 = time.perf_counter()
    pack = {"auto": "auto", "none": None}.get(args.pack_length.lower(), None)
    if pack is None and args.pack_length.lower() != "none":
        pack = int(args.pack_length)
    ours = Embedder.from_pretrained(
        args.model,
        dtype=dtype,
        attention_impl=args.attention,
        pack_length=pack,
        scan_layers=not args.no_scan_layers,
    )
    ours_load_s = time.perf_counter() - t0
    n_matmul = common.matmul_params(ours.params)
    cfg = ours.config
    env["jax_backend"] = jax.default_backend()
    env["jax_device"] = jax.devices()[0].device_kind
    if (args.device == "gpu") != (jax.default_backend() == "gpu"):
        sys.exit(f"--device {args.device} but jax runs on {jax.default_backend()}")

    peer = peer_load_s = None
    if not args.no_peer:
        import torch
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        torch_dtype = torch.bfloat16 if args.device == "gpu" else torch.float32
        peer = SentenceTransformer(
            args.model,
            device="cuda" if args.device == "gpu" else "cpu",
            model_kwargs={"attn_implementation": "sdpa", "dtype": torch_dtype},
        )
        peer_load_s = time.perf_counter() - t0
        env["torch_threads"] = str(torch.get_num_threads())
        env["peer_attention"] = peer[0].auto_model.config._attn_implementation

    n = 8192 if args.device == "gpu" else 2048
    peaks = {"xla": common.matmul_peak_jax(n, dtype=dtype)}
    if peer is not None:
        peaks["torch"] = common.matmul_peak_torch(n, dtype=dtype, device=peer.device)
    peak = max(peaks.values())

    workloads = [
        (f"{length} tokens", common.fixed_length_texts(ours.tokenizer, length, count))
        for length, count in args.fixed
    ]
    workloads.append(("mixed 8-400 words", common.mixed_corpus(args.n_mixed)))

    # Wrap the forward functions to see the shapes each side really runs.
    ours_log = ShapeLog()
    ours_forward = ours._forward

    def logged_forward(params, tokens, mask):
        ours_log.shapes.append(tuple(tokens.shape))
        return ours_forward(params, tokens, mask)

    ours._forward = logged_forward
    ours_packed = ours._forward_packed

    def logged_packed(params, tokens, *rest):
        ours_log.shapes.append(tuple(tokens.shape))
        return ours_packed(params, tokens, *rest)

    ours._forward_packed = logged_packed
    env["ours_pack_length"] = str(ours.pack_length)
    env["ours_scan_layers"] = str(cfg.scan_layers)
    peer_log = ShapeLog()
    if peer is not None:
        transformer = peer[0]
        peer_forward = transformer.forward

        def logged_peer_forward(features, *a, **kw):
            peer_log.shapes.append(tuple(features["input_ids"].shape))
            return peer_forward(features, *a, **kw)

        transformer.forward = logged_peer_forward

    rows = []
    for name, texts in workloads:
        rows.append(
            _run_workload(name, texts, ours, peer, ours_log, peer_log, args, cfg, n_matmul, peak)
        )

    report = {
        "environment": env,
        "load_average_before": load_before,
        "load_average_after": common.load_average(),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "model_load_s": {"ours": round(ours_load_s, 1), "peer": _round(peer_load_s, 1)},
        "matmul_params": n_matmul,
        "device": args.device,
        "dtype": dtype,
        "peak_memory_gib": common.peak_memory_gib(peer),
        "rows": rows,
    }
    _print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run_workload(name, texts, ours, peer, ours_log, peer_log, args, cfg, n_matmul, peak) -> dict:
    bs = args.batch_size
    lengths = [len(x) for x in ours.tokenizer.encode(texts, max_length=ours.max_length)]
    row = {"workload": name, "texts": len(texts), "tokens": int(sum(lengths))}
    flops = common.forward_flops(cfg, n_matmul, lengths)

    _, tok_t = common.timed(lambda: ours.tokenizer.encode(texts, max_length=ours.max_length))
    row["ours_tokenize_s"] = round(tok_t.wall_s, 4)
    if peer is not None:
        hf = peer.tokenizer(texts, truncation=True, max_length=peer.max_seq_length)["input_ids"]
        if [len(x) for x in hf] != lengths:
            raise RuntimeError(f"{name}: the two tokenizers disagree on token counts")
        _, tok_t = common.timed(
            lambda: peer.tokenizer(texts, truncation=True, max_length=peer.max_seq_length)
        )
        row["peer_tokenize_s"] = round(tok_t.wall_s, 4)

    # Warm-up: ours on the whole workload (compiles every shape it needs); the peer, which has
    # nothing to compile, on a few texts (first-call allocations).
    _, first = common.timed(lambda: ours.encode(texts, batch_size=bs))
    row["ours_first_call_s"] = round(first.wall_s, 2)
    if peer is not None:
        peer.encode(texts[:PEER_WARMUP_TEXTS], batch_size=bs)

    best_ours = best_peer = None
    for _ in range(args.repeats):
        ours_log.shapes.clear()
        emb_ours, t = common.timed(lambda: ours.encode(texts, batch_size=bs))
        best_ours = t if best_ours is None or t.wall_s < best_ours.wall_s else best_ours
        if peer is not None:
            peer_log.shapes.clear()
            emb_peer, t = common.timed(
                lambda: peer.encode(texts, batch_size=bs, convert_to_numpy=True)
            )
            best_peer = t if best_peer is None or t.wall_s < best_peer.wall_s else best_peer

    row["ours_texts_per_s"] = round(len(texts) / best_ours.wall_s, 2)
    row["ours_tokens_per_s"] = round(row["tokens"] / best_ours.wall_s, 1)
    row["ours_mfu"] = round(flops / best_ours.wall_s / peak, 4)
    row["ours_padding"] = round(ours_log.padded_tokens() / row["tokens"], 3)
    row["ours_cores_busy"] = round(best_ours.cores_busy, 2)
    row["ours_compile_s_est"] = round(max(first.wall_s - best_ours.wall_s, 0.0), 2)
    if peer is not None:
        row["peer_texts_per_s"] = round(len(texts) / best_peer.wall_s, 2)
        row["peer_tokens_per_s"] = round(row["tokens"] / best_peer.wall_s, 1)
        row["peer_mfu"] = round(flops / best_peer.wall_s / peak, 4)
        row["peer_padding"] = round(peer_log.padded_tokens() / row["tokens"], 3)
        row["peer_cores_busy"] = round(best_peer.cores_busy, 2)
        row["ratio"] = round(row["ours_texts_per_s"] / row["peer_texts_per_s"], 3)
        cos = np.sum(np.asarray(emb_ours) * np.asarray(emb_peer, np.float32), axis=1)
        row["min_cosine"] = float(np.min(cos))
    # One line per workload as it finishes, so a run cut short still reports what it measured.
    print(f"done: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


def _round(x, n):
    return None if x is None else round(x, n)


COLUMNS = [
    ("workload", "workload"),
    ("texts", "texts"),
    ("tokens", "tokens"),
    ("ours texts/s", "ours_texts_per_s"),
    ("peer texts/s", "peer_texts_per_s"),
    ("ratio", "ratio"),
    ("ours tok/s", "ours_tokens_per_s"),
    ("MFU ours", "ours_mfu"),
    ("MFU peer", "peer_mfu"),
    ("pad ours", "ours_padding"),
    ("pad peer", "peer_padding"),
    ("cores ours", "ours_cores_busy"),
    ("cores peer", "peer_cores_busy"),
    ("ours 1st call s", "ours_first_call_s"),
    ("min cos", "min_cosine"),
]


def _print_report(report: dict) -> None:
    env = report["environment"]
    print(f"\n## {report['device'].upper()} encode, {report['dtype']}, batch", report["batch_size"])
    print("peak device memory GiB:", report["peak_memory_gib"])
    print(", ".join(f"{k} {v}" for k, v in env.items() if v))
    print(
        f"load average before {report['load_average_before']}, "
        f"after {report['load_average_after']}; matmul peak GFLOP/s "
        f"{report['matmul_peak_gflops']}; model load s {report['model_load_s']}"
    )
    print()
    print("| " + " | ".join(h for h, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in report["rows"]:
        cells = []
        for _, key in COLUMNS:
            v = row.get(key, "")
            cells.append(f"{v:.6f}" if key == "min_cosine" and v != "" else str(v))
        print("| " + " | ".join(cells) + " |")
    print(
        "\nratio = ours texts/s / peer texts/s; pad = padded tokens per real token; cores = "
        "process CPU time / wall time; tokenise s (ours, peer): "
        + ", ".join(
            f"{r['workload']}: {r['ours_tokenize_s']}, {r.get('peer_tokenize_s', '-')}"
            for r in report["rows"]
        )
    )


if __name__ == "__main__":
    main()
