"""GPU correctness of the attention kernels on the 300m architecture (random weights, bf16).

    python bench/gpu_check.py

For padded batches below and above the local window, the embeddings with `attention_impl="auto"`
(cuDNN for global layers and short local ones, banded for long local ones on GPU) are compared
with the masked XLA reference in bf16 and with float32 XLA. Prints the kernels chosen and the
lowest cosine per comparison; exits non-zero below 0.999.
"""

import sys

import jax
import numpy as np

from embeddinggemma_jax.model import EmbeddingGemma, ModelConfig, param_shapes
from embeddinggemma_jax.model.attention import choose_impl


def main() -> int:
    base = ModelConfig.embeddinggemma_300m()
    rng = np.random.default_rng(0)
    params = jax.device_put(
        jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32) * 0.02, param_shapes(base))
    )
    worst = 1.0
    print("backend", jax.default_backend(), jax.devices()[0].device_kind, "jax", jax.__version__)
    for t in (128, 600):
        lengths = [t, t // 2 + 3, 5, 1]
        tokens = np.zeros((len(lengths), t), np.int32)
        for i, n in enumerate(lengths):
            tokens[i, :n] = rng.integers(4, base.vocab_size, n)
        mask = tokens != 0
        out = {}
        for name, cfg in {
            "bf16 auto": base.replace(dtype="bfloat16"),
            "bf16 xla": base.replace(dtype="bfloat16", attention_impl="xla"),
            "f32 xla": base.replace(attention_impl="xla"),
        }.items():
            forward = jax.jit(EmbeddingGemma(cfg).apply)
            out[name] = np.asarray(forward({"params": params}, tokens, mask))
        chosen = {
            kind: choose_impl(base.replace(dtype="bfloat16"), kind, t)
            for kind in ("local", "global")
        }
        for a, b in (("bf16 auto", "bf16 xla"), ("bf16 auto", "f32 xla")):
            cos = float(np.min(np.sum(out[a] * out[b], -1)))
            worst = min(worst, cos)
            print(f"T={t} kernels {chosen}: min cosine {a} vs {b} = {cos:.6f}")
    return 0 if worst >= 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
