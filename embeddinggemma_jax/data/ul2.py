"""UL2 mixture-of-denoisers objective for the encoder-decoder adaptation stage (pure NumPy).

Each example is a 1-D array of token ids. `corrupt(tokens, index, config)` picks a denoiser and
turns the sequence into an encoder input and decoder targets, deterministically from
`(config.seed, index)`: one `np.random.Generator` is seeded with `[seed, index]` and makes every
random choice for that example (the denoiser first, then the corruption). Fold the epoch into
`index` or `seed` if later epochs should see fresh corruptions.

Denoisers (UL2, Tay et al. 2022), each with its mode token prepended to the encoder input:

    name  kind    mode   mean span  rate          name  kind    mode   mean span  rate
    R1    span    NLU    3          0.15          X3    span    NLG    64         0.15
    R2    span    NLU    8          0.15          X4    span    NLG    64         0.50
    X1    span    NLG    3          0.50          S     prefix  S2S    -          -
    X2    span    NLG    8          0.50

Default mixture weights: S-denoising 20% of examples, the rest split evenly over the six span
denoisers (weights are relative and normalised; set them with `Denoiser.weight`).

Span corruption follows T5's `random_spans_noise_mask`, for a sequence of L tokens:
  - noise tokens n = round(L * rate), clipped to [1, L - 1] (n = 1 for L = 1); `round` is
    Python's (half to even, as T5's tf.round);
  - noise spans m = max(1, round(n / mean_span)), clipped to at most n and L - n + 1;
  - the n noise tokens are split into m non-empty spans, and the L - n kept tokens into m + 1 gaps,
    each split a uniformly random composition (T5's random segmentation). The inner gaps are
    non-empty so spans never touch; unlike T5 the first and last gaps may be empty, so the first
    and last tokens can be masked too (T5 always starts with kept tokens and ends with noise).
    Every mask with n noise tokens in exactly m spans is then equally likely.
The encoder input is `[mode] + kept tokens with each span replaced by its sentinel`; the targets
are `sentinel_0 span_0 sentinel_1 span_1 ...` (+ `eos_id` when set). Sentinels are
`config.sentinel_ids` in order. The realised mean span length is n / m, which is close to
`mean_span` once L * rate >> mean_span: for mean span 64 at rate 0.15 a 128-token sequence has a
single 19-token span; over lengths 512..2048 the token-weighted mean is 64.

Prefix LM (S): the split point k (prefix length) is uniform on {1, ..., L - 1} (k = 0 for L = 1);
encoder input `[mode] + tokens[:k]`, targets `tokens[k:]` (+ `eos_id`). The suffix fraction is
therefore about 0.5 on average.

Long sequences: a sequence is truncated (its leading tokens kept) to the longest prefix whose
encoder input fits `encoder_max_length` and whose targets fit `decoder_max_length`. For span
corruption the output sizes depend only on the length, so this is exact; for the prefix LM the
sequence is cut to `(encoder_max_length - 1) + (decoder_max_length - 1)` tokens (the 1s are the
mode token and eos, when configured) and k is drawn uniformly from the split points that fit both
sides. Short sequences: L = 1 gives encoder `[mode, sentinel_0]`, targets `[sentinel_0, t_0]` for
span corruption and encoder `[mode]`, targets `[t_0]` for the prefix LM; L = 2, 3 keep at least
one token visible. Empty sequences are an error.

Mode tokens can be switched off (`prepend_mode_token=False`). Decoder inputs are the targets shifted right with `decoder_start_id` first. Batches come padded
(`pad_batch`) or packed (`pack_batch`); both carry segment ids and positions so the model code can
treat them alike, and a loss mask that is 1 exactly on real decoder targets.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np

SPAN = "span"
PREFIX = "prefix"
MODES = ("NLU", "NLG", "S2S")

BATCH_KEYS = (
    "encoder_input_ids",
    "encoder_mask",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_input_ids",
    "decoder_target_ids",
    "decoder_mask",
    "decoder_loss_mask",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_denoiser_ids",
)


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One denoising task of the mixture.

    kind: "span" (T5 span corruption with `mean_span`, `rate`) or "prefix" (prefix LM).
    mode: which mode token is prepended: "NLU", "NLG" or "S2S".
    weight: relative mixture weight (>= 0).
    """

    name: str
    kind: Literal["span", "prefix"]
    mode: Literal["NLU", "NLG", "S2S"]
    mean_span: float = 0.0
    rate: float = 0.0
    weight: float = 1.0

    def __post_init__(self):
        if self.kind not in (SPAN, PREFIX):
            raise ValueError(
                f"Denoiser {self.name!r}: kind must be 'span' or 'prefix', got {self.kind!r}"
            )
        if self.mode not in MODES:
            raise ValueError(
                f"Denoiser {self.name!r}: mode must be one of {MODES}, got {self.mode!r}"
            )
        if not (np.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(
                f"Denoiser {self.name!r}: weight must be finite and >= 0, got {self.weight}"
            )
        if self.kind == SPAN:
            if not 0.0 < self.rate < 1.0:
                raise ValueError(f"Denoiser {self.name!r}: rate must be in (0, 1), got {self.rate}")
            if not self.mean_span >= 1.0:
                raise ValueError(
                    f"Denoiser {self.name!r}: mean_span must be >= 1, got {self.mean_span}"
                )


def default_denoisers(s_fraction: float = 0.2) -> tuple[Denoiser, ...]:
    """The seven UL2 denoisers; S gets `s_fraction` of examples, the six span denoisers share the rest."""
    if not 0.0 <= s_fraction <= 1.0:
        raise ValueError(f"s_fraction must be in [0, 1], got {s_fraction}")
    w = (1.0 - s_fraction) / 6.0
    return (
        Denoiser("R1", SPAN, "NLU", mean_span=3.0, rate=0.15, weight=w),
        Denoiser("R2", SPAN, "NLU", mean_span=8.0, rate=0.15, weight=w),
        Denoiser("X1", SPAN, "NLG", mean_span=3.0, rate=0.5, weight=w),
        Denoiser("X2", SPAN, "NLG", mean_span=8.0, rate=0.5, weight=w),
        Denoiser("X3", SPAN, "NLG", mean_span=64.0, rate=0.15, weight=w),
        Denoiser("X4", SPAN, "NLG", mean_span=64.0, rate=0.5, weight=w),
        Denoiser("S", PREFIX, "S2S", weight=s_fraction),
    )


@dataclasses.dataclass(frozen=True)
class UL2Config:
    """UL2 data config. All special ids come from the caller's tokenizer; none is assumed here.

    sentinel_ids: ids that replace masked spans, used in this order (e.g. the last vocabulary ids,
        or Gemma's `<unused*>` pieces). Must be at least as many as the most spans any example can
        have at the configured lengths (checked here).
    decoder_start_id: first decoder input token (targets shifted right).
    nlu_id / nlg_id / s2s_id: the "[NLU]", "[NLG]", "[S2S]" mode-token ids (required for the modes
        the denoisers use, unless `prepend_mode_token` is False).
    encoder_max_length / decoder_max_length: longest encoder input / target (incl. mode token / eos).
    eos_id: if set, appended to every target sequence.
    """

    sentinel_ids: tuple[int, ...]
    decoder_start_id: int
    nlu_id: int | None = None
    nlg_id: int | None = None
    s2s_id: int | None = None
    denoisers: tuple[Denoiser, ...] = dataclasses.field(default_factory=default_denoisers)
    encoder_max_length: int = 512
    decoder_max_length: int = 512
    eos_id: int | None = None
    prepend_mode_token: bool = True
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sentinel_ids", tuple(int(s) for s in self.sentinel_ids))
        object.__setattr__(self, "denoisers", tuple(self.denoisers))
        if not self.denoisers:
            raise ValueError("UL2Config.denoisers is empty")
        if not all(isinstance(d, Denoiser) for d in self.denoisers):
            raise TypeError("UL2Config.denoisers must hold Denoiser instances")
        if sum(d.weight for d in self.denoisers) <= 0:
            raise ValueError("UL2Config.denoisers: mixture weights sum to zero")
        if self.seed < 0:
            raise ValueError(f"UL2Config.seed must be >= 0, got {self.seed}")
        if len(set(self.sentinel_ids)) != len(self.sentinel_ids):
            raise ValueError("UL2Config.sentinel_ids contains duplicates")
        if any(s < 0 for s in self.sentinel_ids):
            raise ValueError("UL2Config.sentinel_ids must be non-negative token ids")
        special = {"eos_id": self.eos_id}
        if self.prepend_mode_token:
            for d in self.denoisers:
                if self._mode_id(d.mode) is None:
                    raise ValueError(
                        f"UL2Config.{d.mode.lower()}_id is not set but denoiser {d.name!r} uses "
                        f"mode {d.mode!r} (set it, or prepend_mode_token=False)"
                    )
            special.update(nlu_id=self.nlu_id, nlg_id=self.nlg_id, s2s_id=self.s2s_id)
        clash = {k: v for k, v in special.items() if v is not None and v in set(self.sentinel_ids)}
        if clash:
            raise ValueError(f"UL2Config: {clash} also appear in sentinel_ids")
        for d in self.denoisers:
            min_enc, min_dec = _output_lengths(1, d, self)
            if min_enc > self.encoder_max_length or min_dec > self.decoder_max_length:
                raise ValueError(
                    f"UL2Config: encoder_max_length={self.encoder_max_length} / decoder_max_length="
                    f"{self.decoder_max_length} cannot hold even a 1-token example for denoiser "
                    f"{d.name!r} (needs {min_enc} / {min_dec})"
                )
            if d.kind == SPAN:
                _, spans = _span_sizes(self.max_input_length(d), d)
                if spans > len(self.sentinel_ids):
                    raise ValueError(
                        f"UL2Config: denoiser {d.name!r} can need {spans} sentinels at these lengths "
                        f"but sentinel_ids has {len(self.sentinel_ids)}"
                    )

    def _mode_id(self, mode: str) -> int | None:
        return {"NLU": self.nlu_id, "NLG": self.nlg_id, "S2S": self.s2s_id}[mode]

    @functools.cached_property
    def probabilities(self) -> np.ndarray:
        """[num_denoisers] float64 mixture probabilities."""
        w = np.array([d.weight for d in self.denoisers], np.float64)
        return w / w.sum()

    @functools.cached_property
    def _cumulative(self) -> np.ndarray:
        c = np.cumsum(self.probabilities)
        c[-1] = 1.0
        return c

    @functools.cached_property
    def _sentinels(self) -> np.ndarray:
        return np.asarray(self.sentinel_ids, np.int32)

    @functools.cached_property
    def _sentinels_min(self) -> int:
        return min(self.sentinel_ids, default=np.iinfo(np.int32).max)

    @functools.cached_property
    def _is_sentinel(self) -> np.ndarray:
        """[max sentinel + 2] bool lookup table; the last entry (False) catches every larger id."""
        table = np.zeros(max(self.sentinel_ids, default=-1) + 2, bool)
        table[list(self.sentinel_ids)] = True
        return table

    def max_input_length(self, denoiser: Denoiser) -> int:
        """Longest raw sequence `denoiser` can take at the configured lengths (longer ones are cut)."""
        if denoiser.kind == PREFIX:
            mode, eos = int(self.prepend_mode_token), int(self.eos_id is not None)
            return (self.encoder_max_length - mode) + (self.decoder_max_length - eos)
        # Encoder plus decoder lengths exceed the input length, so no longer input can fit.
        return _fit_length(self.encoder_max_length + self.decoder_max_length, denoiser, self)

    @functools.cached_property
    def _max_input_lengths(self) -> tuple[int, ...]:
        return tuple(self.max_input_length(d) for d in self.denoisers)


@dataclasses.dataclass(frozen=True)
class UL2Example:
    """One corrupted example (unpadded).

    encoder_input_ids: [S] int32, mode token first (if configured).
    decoder_input_ids: [T] int32, `decoder_start_id` + targets[:-1].
    decoder_target_ids: [T] int32.
    denoiser_index: index into `config.denoisers`; kind: "span" or "prefix".
    sentinel_ids: [M] int32, the sentinels used, in order (empty for the prefix LM).
    num_tokens: how many leading input tokens were used (after truncation).
    """

    encoder_input_ids: np.ndarray
    decoder_input_ids: np.ndarray
    decoder_target_ids: np.ndarray
    denoiser_index: int
    kind: str
    sentinel_ids: np.ndarray
    num_tokens: int
    has_mode_token: bool
    has_eos: bool


def _span_sizes(length: int, d: Denoiser) -> tuple[int, int]:
    """(noise tokens, noise spans) for a span denoiser on `length` tokens; both non-decreasing in length."""
    if length == 1:
        return 1, 1
    noise = min(max(round(length * d.rate), 1), length - 1)
    spans = max(1, round(noise / d.mean_span))
    return noise, min(spans, noise, length - noise + 1)


def _output_lengths(length: int, d: Denoiser, cfg: UL2Config) -> tuple[int, int]:
    """(encoder, decoder) lengths for `length` input tokens; for the prefix LM the smallest possible."""
    mode, eos = int(cfg.prepend_mode_token), int(cfg.eos_id is not None)
    if d.kind == PREFIX:
        return mode + (1 if length > 1 else 0), (length - 1 if length > 1 else 1) + eos
    noise, spans = _span_sizes(length, d)
    return mode + length - noise + spans, noise + spans + eos


def _fit_length(length: int, d: Denoiser, cfg: UL2Config) -> int:
    """Largest L <= length whose span-corruption output fits the configured maxima (binary search)."""

    def fits(n: int) -> bool:
        e, t = _output_lengths(n, d, cfg)
        return e <= cfg.encoder_max_length and t <= cfg.decoder_max_length

    if fits(length):
        return length
    lo, hi = 1, length  # fits(lo) holds (checked in UL2Config), fits(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _composition(rng: np.random.Generator, total: int, parts: int) -> np.ndarray:
    """Uniformly random split of `total` items into `parts` non-empty, ordered segments: [parts] int64.

    The parts - 1 cuts are a uniformly random subset of the total - 1 inner boundaries."""
    is_cut = np.zeros(total + 1, bool)
    is_cut[1:parts] = True
    rng.shuffle(is_cut[1:total])
    is_cut[0] = is_cut[total] = True
    bounds = np.flatnonzero(is_cut)
    return bounds[1:] - bounds[:-1]


def _rng(seed: int, index: int) -> np.random.Generator:
    if index < 0:
        raise ValueError(f"example index must be >= 0, got {index}")
    return np.random.default_rng([seed, index])


def choose_denoiser(index: int, config: UL2Config) -> int:
    """The denoiser `corrupt` uses for example `index` (same first draw from the same generator)."""
    return int(np.searchsorted(config._cumulative, _rng(config.seed, index).random(), side="right"))


def corrupt(
    tokens: Sequence[int] | np.ndarray, index: int, config: UL2Config, denoiser: int | None = None
) -> UL2Example:
    """Applies the UL2 mixture to one token sequence, deterministically per (config.seed, index).

    tokens: [L] integer ids, L >= 1, containing none of `config.sentinel_ids`.
    denoiser: force this denoiser index (the mixture draw is still made, so a forced example equals
        the mixture's example whenever the mixture picks the same denoiser).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not (tokens.dtype.kind in "iu" or tokens.size == 0):
        raise ValueError(
            f"example {index}: tokens must be a 1-D integer array, got {tokens.dtype} {tokens.shape}"
        )
    if tokens.size == 0:
        raise ValueError(f"example {index}: empty token sequence")
    rng = _rng(config.seed, index)
    draw = int(np.searchsorted(config._cumulative, rng.random(), side="right"))
    if denoiser is None:
        denoiser = draw
    elif not 0 <= denoiser < len(config.denoisers):
        raise ValueError(f"denoiser index {denoiser} out of range [0, {len(config.denoisers)})")
    d = config.denoisers[denoiser]
    n_mode, n_eos = int(config.prepend_mode_token), int(config.eos_id is not None)

    # Output sizes are non-decreasing in the input length, so the longest prefix that fits is:
    length = min(tokens.size, config._max_input_lengths[denoiser])
    t = tokens[:length].astype(np.int32)
    if t.min() < 0:
        raise ValueError(f"example {index}: negative token id {int(t.min())}")

    if d.kind == PREFIX:
        if length == 1:
            k = 0
        else:
            room_enc = config.encoder_max_length - n_mode
            room_dec = config.decoder_max_length - n_eos
            k = int(rng.integers(max(1, length - room_dec), min(length - 1, room_enc) + 1))
        encoder = np.empty(n_mode + k, np.int32)
        encoder[n_mode:] = t[:k]
        decoder = np.empty(1 + length - k + n_eos, np.int32)  # start id + targets
        decoder[1 : 1 + length - k] = t[k:]
        used = config._sentinels[:0]
    else:
        if t.max() >= config._sentinels_min:  # e.g. never when sentinels are the last ids
            table = config._is_sentinel
            hit = table[np.minimum(t, table.size - 1)]
            if hit.any():
                pos = int(np.argmax(hit))
                raise ValueError(f"example {index}: token {pos} is a sentinel id ({int(t[pos])})")
        noise, spans = _span_sizes(length, d)
        noise_lens = _composition(rng, noise, spans)
        gaps = _composition(rng, length - noise + 2, spans + 1)
        gaps[0] -= 1
        gaps[-1] -= 1
        # Span i covers [starts[i], starts[i] + noise_lens[i]) of the original.
        noise_before = noise_lens.cumsum() - noise_lens
        kept_before = gaps[:-1].cumsum()
        starts = kept_before + noise_before
        edges = np.zeros(length + 1, np.int32)
        edges[starts] = 1
        edges[starts + noise_lens] -= 1
        is_noise = edges[:-1].cumsum().astype(bool)
        used = config._sentinels[:spans]
        span_ids = np.arange(spans)

        encoder = np.empty(n_mode + length - noise + spans, np.int32)
        enc_sentinel = n_mode + kept_before + span_ids
        encoder[enc_sentinel] = used
        enc_kept = np.ones(encoder.size, bool)
        enc_kept[:n_mode] = False
        enc_kept[enc_sentinel] = False
        encoder[enc_kept] = t[~is_noise]

        decoder = np.empty(1 + noise + spans + n_eos, np.int32)  # start id + targets
        dec_sentinel = 1 + noise_before + span_ids
        decoder[dec_sentinel] = used
        dec_noise = np.ones(decoder.size, bool)
        dec_noise[0] = False
        dec_noise[dec_sentinel] = False
        dec_noise[decoder.size - n_eos :] = False
        decoder[dec_noise] = t[is_noise]
    if n_mode:
        encoder[0] = config._mode_id(d.mode)
    if n_eos:
        decoder[-1] = config.eos_id
    decoder[0] = config.decoder_start_id
    return UL2Example(
        encoder_input_ids=encoder,
        decoder_input_ids=decoder[:-1],
        decoder_target_ids=decoder[1:],
        denoiser_index=denoiser,
        kind=d.kind,
        sentinel_ids=used,
        num_tokens=length,
        has_mode_token=bool(n_mode),
        has_eos=bool(n_eos),
    )


def _decode(example: UL2Example) -> tuple[np.ndarray, np.ndarray]:
    """(original tokens [L], noise mask [L] bool: True where the token is predicted by the decoder)."""
    body = example.encoder_input_ids[1:] if example.has_mode_token else example.encoder_input_ids
    targets = example.decoder_target_ids[:-1] if example.has_eos else example.decoder_target_ids
    if example.kind == PREFIX:
        tokens = np.concatenate([body, targets])
        return tokens, np.arange(tokens.size) >= body.size
    sentinels = example.sentinel_ids
    t_pos = np.flatnonzero(np.isin(targets, sentinels))
    b_pos = np.flatnonzero(np.isin(body, sentinels))
    if not (
        np.array_equal(targets[t_pos], sentinels)
        and np.array_equal(body[b_pos], sentinels)
        and (t_pos.size == 0 or t_pos[0] == 0)
    ):
        raise ValueError("example's sentinels in encoder input and targets do not line up")
    spans = np.split(targets, t_pos[1:])  # each starts with its sentinel
    pieces = np.split(body, b_pos)  # pieces[i+1] starts with sentinel i
    out, mask = [pieces[0]], [np.zeros(pieces[0].size, bool)]
    for span, piece in zip(spans, pieces[1:], strict=True):
        out += [span[1:], piece[1:]]
        mask += [np.ones(span.size - 1, bool), np.zeros(piece.size - 1, bool)]
    return np.concatenate(out).astype(np.int32), np.concatenate(mask)


def reconstruct(example: UL2Example) -> np.ndarray:
    """Inverse of `corrupt`: the (truncated) original tokens [L] int32 from encoder input and targets."""
    return _decode(example)[0]


def noise_mask(example: UL2Example) -> np.ndarray:
    """[L] bool over the original tokens: True where the decoder predicts the token."""
    return _decode(example)[1]


def _empty_batch(rows: int, enc_len: int, dec_len: int, pad_id: int) -> dict[str, np.ndarray]:
    return {
        "encoder_input_ids": np.full((rows, enc_len), pad_id, np.int32),
        "encoder_mask": np.zeros((rows, enc_len), bool),
        "encoder_segment_ids": np.zeros((rows, enc_len), np.int32),
        "encoder_positions": np.zeros((rows, enc_len), np.int32),
        "decoder_input_ids": np.full((rows, dec_len), pad_id, np.int32),
        "decoder_target_ids": np.full((rows, dec_len), pad_id, np.int32),
        "decoder_mask": np.zeros((rows, dec_len), bool),
        "decoder_loss_mask": np.zeros((rows, dec_len), np.float32),
        "decoder_segment_ids": np.zeros((rows, dec_len), np.int32),
        "decoder_positions": np.zeros((rows, dec_len), np.int32),
        "decoder_denoiser_ids": np.full((rows, dec_len), -1, np.int32),
    }


def _place(batch: dict, row: int, e0: int, d0: int, segment: int, ex: UL2Example) -> None:
    ne, nd = ex.encoder_input_ids.size, ex.decoder_target_ids.size
    es, ds = slice(e0, e0 + ne), slice(d0, d0 + nd)
    batch["encoder_input_ids"][row, es] = ex.encoder_input_ids
    batch["encoder_mask"][row, es] = True
    batch["encoder_segment_ids"][row, es] = segment
    batch["encoder_positions"][row, es] = np.arange(ne)
    batch["decoder_input_ids"][row, ds] = ex.decoder_input_ids
    batch["decoder_target_ids"][row, ds] = ex.decoder_target_ids
    batch["decoder_mask"][row, ds] = True
    batch["decoder_loss_mask"][row, ds] = 1.0
    batch["decoder_segment_ids"][row, ds] = segment
    batch["decoder_positions"][row, ds] = np.arange(nd)
    batch["decoder_denoiser_ids"][row, ds] = ex.denoiser_index


def _check_fits(i: int, ex: UL2Example, enc_len: int, dec_len: int) -> None:
    if ex.encoder_input_ids.size > enc_len or ex.decoder_target_ids.size > dec_len:
        raise ValueError(
            f"example {i} in the batch has encoder/decoder lengths {ex.encoder_input_ids.size}/"
            f"{ex.decoder_target_ids.size}, over the batch lengths {enc_len}/{dec_len}"
        )


def pad_batch(
    examples: Sequence[UL2Example],
    encoder_length: int,
    decoder_length: int,
    pad_id: int = 0,
    num_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """One example per row, right-padded (rows past the examples, up to `num_rows`, are all padding).

    Returns (B = num_rows or len(examples), S = encoder_length, T = decoder_length):
      encoder_input_ids [B, S] int32, encoder_mask [B, S] bool, encoder_segment_ids [B, S] int32
      (1 on real tokens, 0 on padding), encoder_positions [B, S] int32; decoder_input_ids,
      decoder_target_ids [B, T] int32, decoder_mask [B, T] bool, decoder_loss_mask [B, T] float32
      (1 on real targets), decoder_segment_ids, decoder_positions [B, T] int32,
      decoder_denoiser_ids [B, T] int32 (denoiser index, -1 on padding).
    """
    rows = len(examples) if num_rows is None else num_rows
    if rows < len(examples):
        raise ValueError(f"pad_batch: {len(examples)} examples do not fit num_rows={rows}")
    batch = _empty_batch(rows, encoder_length, decoder_length, pad_id)
    for i, ex in enumerate(examples):
        _check_fits(i, ex, encoder_length, decoder_length)
        _place(batch, i, 0, 0, 1, ex)
    return batch


def pack_batch(
    examples: Sequence[UL2Example],
    num_rows: int,
    encoder_length: int,
    decoder_length: int,
    pad_id: int = 0,
) -> tuple[dict[str, np.ndarray], int]:
    """Packs examples, in order, into `num_rows` rows (first fit: each goes into the first row with
    room on both the encoder and the decoder side); stops at the first example that fits no row.

    Returns (batch, number of examples consumed). Keys and shapes as in `pad_batch`; segment ids
    number the examples of a row 1, 2, ... (0 = padding) and positions restart at 0 per example, so
    attention must be masked to equal segment ids (and causally on the decoder).
    """
    batch = _empty_batch(num_rows, encoder_length, decoder_length, pad_id)
    enc_used = np.zeros(num_rows, np.int64)
    dec_used = np.zeros(num_rows, np.int64)
    segments = np.zeros(num_rows, np.int64)
    consumed = 0
    for i, ex in enumerate(examples):
        _check_fits(i, ex, encoder_length, decoder_length)
        room = (enc_used + ex.encoder_input_ids.size <= encoder_length) & (
            dec_used + ex.decoder_target_ids.size <= decoder_length
        )
        if not room.any():
            break
        row = int(np.argmax(room))
        segments[row] += 1
        _place(batch, row, int(enc_used[row]), int(dec_used[row]), int(segments[row]), ex)
        enc_used[row] += ex.encoder_input_ids.size
        dec_used[row] += ex.decoder_target_ids.size
        consumed += 1
    return batch, consumed


class UL2Batcher:
    """Batches of corrupted examples, checkpointable: ``get_state()`` / ``set_state()`` hold the
    index of the first sequence not yet in an emitted batch.

    stream_from(index): an iterator of ``(sequence index, token ids)`` from `index` on (indices
      increasing); corruption is deterministic per (config.seed, index), so a resumed batcher
      re-reads the examples that were waiting and emits exactly what an uninterrupted one would.
    batch_size rows at the config's lengths, padded (`pad_batch`) or packed (`pack_batch`: a
    batch is emitted once the waiting examples hold more tokens than it can, on either side;
    examples that did not fit wait for the next). At the end of a finite stream the last, partly
    filled batches come too (same shapes) unless `drop_remainder`.
    """

    def __init__(
        self,
        stream_from,
        config: UL2Config,
        batch_size: int,
        *,
        pack: bool = False,
        pad_id: int = 0,
        drop_remainder: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.stream_from, self.config = stream_from, config
        self.batch_size, self.pack, self.pad_id = batch_size, pack, pad_id
        self.drop_remainder = drop_remainder
        self.set_state({"index": 0})

    def get_state(self) -> dict[str, int]:
        return {"index": int(self._next)}

    def set_state(self, state) -> None:
        self._next = int(state["index"])
        self._stream = iter(self.stream_from(self._next))
        self._pending: list[tuple[int, UL2Example]] = []  # read, not yet emitted
        self._ended = False

    def __iter__(self):
        return self

    def _read(self) -> bool:
        try:
            i, ids = next(self._stream)
        except StopIteration:
            self._ended = True
            return False
        self._pending.append((i, corrupt(ids, i, self.config)))
        return True

    def _full(self) -> bool:
        enc, dec, rows = (
            self.config.encoder_max_length,
            self.config.decoder_max_length,
            self.batch_size,
        )
        if not self.pack:
            return len(self._pending) >= rows
        waiting = [e for _, e in self._pending]
        return (
            sum(e.encoder_input_ids.size for e in waiting) > rows * enc
            or sum(e.decoder_target_ids.size for e in waiting) > rows * dec
        )

    def __next__(self) -> dict[str, np.ndarray]:
        while not self._ended and not self._full():
            self._read()
        if not self._pending or (self._ended and self.drop_remainder and not self._full()):
            raise StopIteration
        enc, dec, rows = (
            self.config.encoder_max_length,
            self.config.decoder_max_length,
            self.batch_size,
        )
        examples = [e for _, e in self._pending]
        if self.pack:
            batch, n = pack_batch(examples, rows, enc, dec, self.pad_id)
        else:
            n = min(len(examples), rows)
            batch = pad_batch(examples[:n], enc, dec, self.pad_id, num_rows=rows)
        self._next = self._pending[n][0] if n < len(self._pending) else self._pending[-1][0] + 1
        self._pending = self._pending[n:]
        return batch


def ul2_batches(
    sequences: Iterable[Sequence[int] | np.ndarray],
    config: UL2Config,
    batch_size: int,
    *,
    pack: bool = False,
    pad_id: int = 0,
    first_index: int = 0,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Corrupts `sequences` (example i gets index `first_index + i`) and yields batches of
    `batch_size` rows at the config's encoder/decoder lengths, padded or packed: `UL2Batcher`
    over a one-pass iterable (see there)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stream = enumerate(sequences, first_index)
    return UL2Batcher(
        lambda start: stream, config, batch_size, pack=pack, pad_id=pad_id,
        drop_remainder=drop_remainder,
    )  # fmt: skip
