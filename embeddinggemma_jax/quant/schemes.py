"""Quantization schemes as data: (parameter-path regex -> quantizer) rules, first match wins.

Paths are a parameter's names joined by '/', e.g. 'encoder/layer_3/attn/kv/w'. Rules are matched
with `re.fullmatch`; they allow any prefix so the same rule matches a layer run inside the
scanned stack (whose blocks see 'attn/kv/w'). A parameter no rule matches stays float (the norms).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from embeddinggemma_jax.quant.quantizers import QUANTIZERS

Rule = tuple[str, str]  # (path regex, quantizer name)

_ANY = r"(?:.*/)?"
EMBEDDING = _ANY + r"embedder/embedding"
ATTENTION = _ANY + r"attn/(?:q|kv|o)/w"
FFN = _ANY + r"mlp/(?:gating|down)/w"
DENSE = _ANY + r"dense_\d+/w"

SCHEMES: dict[str, tuple[Rule, ...]] = {
    # Every matmul weight and the token-embedding table, GGUF's block formats.
    "q4_0": ((EMBEDDING, "q4_0"), (ATTENTION, "q4_0"), (FFN, "q4_0"), (DENSE, "q4_0")),
    "q8_0": ((EMBEDDING, "q8_0"), (ATTENTION, "q8_0"), (FFN, "q8_0"), (DENSE, "q8_0")),
    # e4_a8_f4_p4: int4 embeddings, int8 attention, int4 feed-forward and projections, per channel.
    "mixed": ((EMBEDDING, "int4"), (ATTENTION, "int8"), (FFN, "int4"), (DENSE, "int4")),
}


def check_scheme(name: str | None) -> str | None:
    if name is not None and name not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {name!r}; known: {', '.join(SCHEMES)}")
    return name


@functools.cache
def _compiled(scheme: str) -> tuple[tuple[re.Pattern, str], ...]:
    rules = SCHEMES[check_scheme(scheme)]
    for _, q in rules:
        assert q in QUANTIZERS, q
    return tuple((re.compile(p), q) for p, q in rules)


def quantizer_for(scheme: str | None, path: str) -> str | None:
    """The quantizer of the first rule whose regex fullmatches `path`; None: stays float."""
    if scheme is None:
        return None
    for pattern, q in _compiled(scheme):
        if pattern.fullmatch(path):
            return q
    return None


def param_paths(params: Mapping, prefix: str = "") -> list[str]:
    """'a/b/c' for every leaf of a nested mapping."""
    out = []
    for k, v in params.items():
        path = f"{prefix}{k}"
        out.extend(param_paths(v, path + "/") if isinstance(v, Mapping) else [path])
    return out


def assignments(scheme: str, paths: Iterable[str]) -> dict[str, str | None]:
    """path -> quantizer (None: float) for each path."""
    return {p: quantizer_for(scheme, p) for p in paths}


def unused_rules(scheme: str, paths: Iterable[str]) -> list[str]:
    """Rule regexes of `scheme` that match no path (a typo'd rule would silently do nothing)."""
    paths = list(paths)
    return [p for p, _ in SCHEMES[scheme] if not any(re.fullmatch(p, x) for x in paths)]
