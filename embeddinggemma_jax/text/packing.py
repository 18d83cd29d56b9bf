"""Sequence packing: several tokenized texts share one row, told apart by segment ids, with
positions restarting at 0 per text, so short texts stop paying for padding. The model masks
attention to equal segment ids and pools per segment (`EmbeddingGemma(..., segments_bt=...)`), so a
packed text gets the embedding it would get in a row of its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Groups item indices into rows of at most `capacity` tokens: longest first, each into the
    row whose free room fits it most tightly (a new row when none does). O(N log N) searches.

    Returns the rows (lists of indices, longest first within a row), fullest rows first.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        i = too_long[0]
        raise ValueError(f"item {i} has {lengths[i]} tokens, over the row capacity {capacity}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            bisect.insort(free, (capacity - n, len(rows) - 1))
        else:
            room, row = free.pop(k)
            rows[row].append(i)
            bisect.insort(free, (room - n, row))
    fill = [sum(lengths[i] for i in r) for r in rows]
    return [rows[r] for r in sorted(range(len(rows)), key=lambda r: -fill[r])]


def pack_rows(
    sequences: Sequence[Sequence[int]],
    rows: Sequence[Sequence[int]],
    length: int,
    num_rows: int | None = None,
    pad_id: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lays out `rows` (lists of indices into `sequences`) as arrays [num_rows, length]:
    token ids (pad_id after the texts), segment ids (1, 2, ... per text in row order, 0 on
    padding) and positions (0.. per text). Rows past len(rows) are all padding."""
    num_rows = len(rows) if num_rows is None else num_rows
    if num_rows < len(rows):
        raise ValueError(f"{len(rows)} rows do not fit num_rows={num_rows}")
    tokens = np.full((num_rows, length), pad_id, np.int32)
    segments = np.zeros((num_rows, length), np.int32)
    positions = np.zeros((num_rows, length), np.int32)
    for r, members in enumerate(rows):
        start = 0
        for s, i in enumerate(members, start=1):
            seq = sequences[i]
            end = start + len(seq)
            if end > length:
                raise ValueError(f"row {r} holds {end}+ tokens, over the row length {length}")
            tokens[r, start:end] = seq
            segments[r, start:end] = s
            positions[r, start:end] = np.arange(len(seq))
            start = end
    return tokens, segments, positions


def bucket_lengths(
    max_length: int, min_bucket: int = 16, buckets: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The padded lengths a batch may take: powers of two in [min_bucket, max_length) plus
    max_length, or the given `buckets` below max_length plus max_length; sorted.

    A handful of shapes bounds jit recompilation while wasting at most half a batch on padding.
    """
    if buckets is None:
        out = []
        b = 1
        while b < min_bucket:
            b *= 2
        while b < max_length:
            out.append(b)
            b *= 2
    else:
        out = [b for b in buckets if 0 < b < max_length]
    return tuple(sorted(set(out) | {max_length}))
