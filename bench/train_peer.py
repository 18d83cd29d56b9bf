"""The peer of bench/train.py: a PyTorch sentence-transformers-style contrastive train step.

transformers' Gemma3TextModel (the 300m config, random weights; --tiny: the tiny test config)
with mean pooling, the bias-free dense head and L2 normalisation, in-batch contrastive
cross-entropy over query x positive cosines (temperature 0.05), torch.optim.AdamW, bf16 autocast
(float32 master weights), SDPA attention. Every text is exactly --length random tokens, no padding.
Prints one JSON line: {"device", "step_s", "warmup_s", "tokens_per_s", "loss"}.

    python bench/train_peer.py --batch 64 --length 256 --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from embeddinggemma_jax.model import ModelConfig

    cfg = ModelConfig.tiny() if args.tiny else ModelConfig.embeddinggemma_300m()
    hf = cfg.to_hf_config()
    hf.pop("architectures", None)
    hf.pop("model_type", None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = Gemma3TextConfig(**hf)
    config._attn_implementation = "sdpa"
    encoder = Gemma3TextModel(config).to(device)
    dims = (cfg.embed_dim, *cfg.head_dims)
    head = torch.nn.Sequential(
        *[torch.nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])]
    ).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
    b, t = args.batch, args.length
    g = torch.Generator().manual_seed(0)

    def role():
        ids = torch.randint(4, cfg.vocab_size, (b, t), generator=g)
        ids[:, 0], ids[:, -1] = 2, 1
        return ids.to(device), torch.ones(b, t, dtype=torch.long, device=device)

    (q_ids, q_mask), (p_ids, p_mask) = role(), role()
    labels = torch.arange(b, device=device)
    autocast = torch.autocast(
        device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"
    )

    def embed(ids, mask):
        h = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(head(pooled).float(), dim=-1)

    def step():
        with autocast:
            q, d = embed(q_ids, q_mask), embed(p_ids, p_mask)
        loss = F.cross_entropy(q @ d.T / 0.05, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        json.dumps(
            {
                "device": name,
                "step_s": dt,
                "warmup_s": warm,
                "tokens_per_s": 2 * b * t / dt,
                "loss": float(loss),
            }
        )
    )


if __name__ == "__main__":
    main()
