"""Fake quantizers: float weights in, the float values a quantized format stores out.

Each quantizer works on rows: `x_rc` is [rows, C] with C the contraction (input) dimension, the
layout of a Hugging Face `[out, in]` matrix, so the 32-wide blocks of `q4_0` / `q8_0` are exactly
GGUF's blocks and "per channel" means one scale per output row. The arithmetic follows gguf-py's
reference quantizers step by step (float32, reciprocal then multiply, fp16 scale) so a GGUF file
holds bit for bit what the fake-quantized forward computed.

`fake_quant` wraps a quantizer with the straight-through estimator: forward quantized, gradient
identity (the one place it is written).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

BLOCK = 32  # GGUF's block size for Q4_0 and Q8_0


def _blocks(x_rc: jax.Array) -> jax.Array:
    rows, c = x_rc.shape
    if c % BLOCK:
        raise ValueError(f"block quantization needs the contraction dim ({c}) divisible by {BLOCK}")
    return x_rc.astype(jnp.float32).reshape(rows, c // BLOCK, BLOCK)


def _reciprocal(d: jax.Array) -> jax.Array:
    return jnp.where(d == 0, 0.0, 1.0 / jnp.where(d == 0, 1.0, d))


def _round_half_away(x: jax.Array) -> jax.Array:
    """ggml's roundf, spelled as gguf-py does (floor-based, exact in float32)."""
    a = jnp.abs(x)
    f = jnp.floor(a)
    return jnp.sign(x) * (f + jnp.floor(2.0 * (a - f)))


def _fp16(d: jax.Array) -> jax.Array:
    return d.astype(jnp.float16).astype(jnp.float32)


def q8_0(x_rc: jax.Array) -> jax.Array:
    """GGUF Q8_0: d = absmax / 127 per block of 32 (stored fp16), q = round(x / d)."""
    b = _blocks(x_rc)
    d = jnp.max(jnp.abs(b), axis=-1, keepdims=True) / 127.0
    q = _round_half_away(b * _reciprocal(d))
    return (q * _fp16(d)).reshape(x_rc.shape)


def q4_0(x_rc: jax.Array) -> jax.Array:
    """GGUF Q4_0: d = (signed value of largest magnitude) / -8 per block of 32 (stored fp16),
    q = clip(trunc(x / d + 8.5), 0, 15), value d * (q - 8)."""
    b = _blocks(x_rc)
    imax = jnp.argmax(jnp.abs(b), axis=-1, keepdims=True)
    d = jnp.take_along_axis(b, imax, axis=-1) / -8.0
    q = jnp.clip(jnp.trunc(b * _reciprocal(d) + 8.5), 0.0, 15.0)
    return (_fp16(d) * (q - 8.0)).reshape(x_rc.shape)


def _per_channel(bits: int) -> Callable[[jax.Array], jax.Array]:
    qmax = 2 ** (bits - 1) - 1

    def quantize(x_rc: jax.Array) -> jax.Array:
        x = x_rc.astype(jnp.float32)
        scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / qmax
        q = jnp.clip(_round_half_away(x * _reciprocal(scale)), -qmax - 1, qmax)
        return q * scale

    quantize.__name__ = quantize.__qualname__ = f"int{bits}"
    quantize.__doc__ = f"Symmetric int{bits}, one float32 scale (absmax / {qmax}) per output row."
    return quantize


int8 = _per_channel(8)
int4 = _per_channel(4)

QUANTIZERS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "q4_0": q4_0,
    "q8_0": q8_0,
    "int4": int4,
    "int8": int8,
}


def get_quantizer(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; known: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]


@jax.custom_vjp
def _ste(x: jax.Array, q: jax.Array) -> jax.Array:
    return q


def _ste_fwd(x, q):
    return q, None


def _ste_bwd(_, g):
    return g, jnp.zeros_like(g)


_ste.defvjp(_ste_fwd, _ste_bwd)


def fake_quant(name: str, x_rc: jax.Array) -> jax.Array:
    """The quantizer `name` on rows [R, C] (C = contraction dim), straight-through gradient.

    Returns: [R, C] float32, exactly the dequantized stored values.
    """
    q = get_quantizer(name)(jax.lax.stop_gradient(x_rc))
    return _ste(x_rc.astype(jnp.float32), q)


def contraction_axes(eqn: str) -> tuple[int, ...]:
    """Weight axes an einsum 'IN,W->OUT' sums over (in the input and the weight, not the output)."""
    inputs, out = eqn.replace(" ", "").split("->")
    x, w = inputs.split(",")
    return tuple(i for i, a in enumerate(w) if a in x and a not in out)


def fake_quant_weight(name: str, w: jax.Array, contract: tuple[int, ...]) -> jax.Array:
    """Fake-quantizes an einsum weight of any layout: the `contract` axes (in order) become the
    row's C dimension, as they are flattened in the Hugging Face [out, in] matrix; every other
    axis indexes an output row. Returns w's shape, float32."""
    rest = tuple(i for i in range(w.ndim) if i not in contract)
    perm = rest + tuple(contract)
    moved = jnp.transpose(w, perm)
    rows_shape = moved.shape[: len(rest)]
    x_rc = moved.reshape(math.prod(rows_shape), -1)
    q = fake_quant(name, x_rc).reshape(moved.shape)
    inverse = tuple(perm.index(i) for i in range(w.ndim))
    return jnp.transpose(q, inverse)
