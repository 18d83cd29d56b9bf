"""Fake quantization (QAT / PTQ) and its schemes; see quantizers.py and schemes.py."""

from embeddinggemma_jax.quant.quantizers import (
    BLOCK,
    QUANTIZERS,
    contraction_axes,
    fake_quant,
    fake_quant_weight,
    get_quantizer,
)
from embeddinggemma_jax.quant.schemes import (
    SCHEMES,
    assignments,
    check_scheme,
    param_paths,
    quantizer_for,
    unused_rules,
)

__all__ = [
    "BLOCK",
    "QUANTIZERS",
    "SCHEMES",
    "assignments",
    "check_scheme",
    "contraction_axes",
    "fake_quant",
    "fake_quant_weight",
    "get_quantizer",
    "param_paths",
    "quantizer_for",
    "unused_rules",
]
