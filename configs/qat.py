"""Quantization-aware training: the finetune recipe with the fake-quantized forward pass.

    python -m embeddinggemma_jax.main --config=configs/qat.py:q4_0 --workdir=runs/qat-q4_0 \
        --config.init_from=runs/soup

Variants: q4_0, q8_0, mixed (`quant.SCHEMES`). Starts from any checkpoint (normally the soup),
trains with `config.model.quant` set (parameters stay float: the result is a normal checkpoint),
and distils from the starting model's own float embeddings (teacher.path follows init_from), with
a small learning rate for a few steps. The PTQ baseline is the same scheme with no training:
`Embedder.from_pretrained(M, quant=...)`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs/ is loaded by path
from configs import common, embeddinggemma_300m  # noqa: E402

VARIANTS = ("q4_0", "q8_0", "mixed")


def get_config(arg=None):
    variant = common.variant(arg, VARIANTS, __file__, default="q4_0")
    c = embeddinggemma_300m.get_config("finetune")
    c.unlock()
    c.model.quant = variant
    c.teacher.path = c.get_ref("init_from")  # the float starting model is the teacher
    c.teacher.dtype = "float32"
    c.loss.distill_weight = 1.0
    c.num_steps = 500
    c.optimizer.learning_rate = 5e-6
    c.optimizer.warmup_steps = 50
    c.checkpoint.every = 250
    c.lock()
    return c
