"""UL2 mixture of denoisers: exact reconstruction, corruption statistics, determinism, mixture
weights, truncation and batching (padded and packed)."""

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import stats

from embeddinggemma_jax.data import ul2

# A made-up vocabulary: the special ids are parameters of UL2Config, never Gemma's.
VOCAB = 4096
EOS, START, NLU, NLG, S2S = 1, 2, 3, 4, 5
FIRST_TEXT_ID = 6
SENTINELS = tuple(range(VOCAB - 1, VOCAB - 1 - 600, -1))  # the last ids, T5-style
LAST_TEXT_ID = VOCAB - 1 - len(SENTINELS)

DENOISERS = ul2.default_denoisers()
SPAN_DENOISERS = [d for d in DENOISERS if d.kind == ul2.SPAN]
P_MIN = 1e-3  # chi-square p-value floor (seeds are fixed, so this is deterministic)


def make_config(**kw) -> ul2.UL2Config:
    base = dict(
        sentinel_ids=SENTINELS,
        decoder_start_id=START,
        nlu_id=NLU,
        nlg_id=NLG,
        s2s_id=S2S,
        eos_id=EOS,
        encoder_max_length=2048,
        decoder_max_length=2048,
        seed=17,
    )
    base.update(kw)
    return ul2.UL2Config(**base)


def denoiser_index(cfg: ul2.UL2Config, name: str) -> int:
    return [d.name for d in cfg.denoisers].index(name)


def text(rng: np.random.Generator, length: int) -> np.ndarray:
    return rng.integers(FIRST_TEXT_ID, LAST_TEXT_ID, length, dtype=np.int32)


def masked_positions(ex: ul2.UL2Example, tokens_start: int) -> np.ndarray:
    """Positions predicted by the decoder, read off the targets of an input `tokens_start + arange(L)`."""
    targets = ex.decoder_target_ids[:-1] if ex.has_eos else ex.decoder_target_ids
    return np.sort(targets[~np.isin(targets, ex.sentinel_ids)]) - tokens_start


def check_structure(ex: ul2.UL2Example, cfg: ul2.UL2Config, tokens: np.ndarray) -> None:
    d = cfg.denoisers[ex.denoiser_index]
    np.testing.assert_array_equal(ul2.reconstruct(ex), tokens[: ex.num_tokens])
    np.testing.assert_array_equal(ex.decoder_input_ids[0], cfg.decoder_start_id)
    np.testing.assert_array_equal(ex.decoder_input_ids[1:], ex.decoder_target_ids[:-1])
    assert ex.encoder_input_ids.dtype == ex.decoder_target_ids.dtype == np.int32
    assert ex.encoder_input_ids.size <= cfg.encoder_max_length
    assert ex.decoder_target_ids.size <= cfg.decoder_max_length
    if cfg.prepend_mode_token:
        assert ex.encoder_input_ids[0] == {"NLU": NLU, "NLG": NLG, "S2S": S2S}[d.mode]
    if cfg.eos_id is not None:
        assert ex.decoder_target_ids[-1] == cfg.eos_id
    mask = ul2.noise_mask(ex)
    assert mask.shape == (ex.num_tokens,)
    body = ex.encoder_input_ids[int(cfg.prepend_mode_token) :]
    if d.kind == ul2.SPAN:
        spans = ex.sentinel_ids.size
        np.testing.assert_array_equal(ex.sentinel_ids, cfg.sentinel_ids[:spans])
        np.testing.assert_array_equal(body[np.isin(body, ex.sentinel_ids)], ex.sentinel_ids)
        runs = np.count_nonzero(np.diff(np.concatenate(([0], mask.astype(int)))) == 1)
        assert runs == spans  # spans never touch
        assert 1 <= mask.sum() and (mask.sum() < ex.num_tokens or ex.num_tokens == 1)
    else:
        assert ex.sentinel_ids.size == 0
        k = body.size
        np.testing.assert_array_equal(mask, np.arange(ex.num_tokens) >= k)
        assert 1 <= k < ex.num_tokens or ex.num_tokens == 1


@pytest.mark.parametrize(
    "options",
    [{}, {"eos_id": None}, {"prepend_mode_token": False, "nlu_id": None}],
    ids=["mode+eos", "no-eos", "no-mode"],
)
@pytest.mark.parametrize("name", [d.name for d in DENOISERS])
def test_reconstructs_original_exactly(name, options):
    cfg = make_config(**options)
    di = denoiser_index(cfg, name)
    rng = np.random.default_rng(1)
    lengths = [1, 2, 3, 4, 5, 6, 7, 8] * 5 + list(rng.integers(9, 600, 120))
    for i, length in enumerate(lengths):
        tokens = text(rng, int(length))
        ex = ul2.corrupt(tokens, i, cfg, denoiser=di)
        assert ex.num_tokens == length
        check_structure(ex, cfg, tokens)


def test_single_token_is_masked_or_predicted():
    cfg = make_config()
    for name in ("R1", "X4"):
        ex = ul2.corrupt([77], 0, cfg, denoiser=denoiser_index(cfg, name))
        np.testing.assert_array_equal(ex.encoder_input_ids[1:], [SENTINELS[0]])
        np.testing.assert_array_equal(ex.decoder_target_ids, [SENTINELS[0], 77, EOS])
    ex = ul2.corrupt([77], 0, cfg, denoiser=denoiser_index(cfg, "S"))
    np.testing.assert_array_equal(ex.encoder_input_ids, [S2S])
    np.testing.assert_array_equal(ex.decoder_target_ids, [77, EOS])


@pytest.mark.parametrize("denoiser", SPAN_DENOISERS, ids=lambda d: d.name)
def test_span_corruption_rate_and_mean_span_length(denoiser):
    """10,000 examples with lengths 512..2048: the token-weighted corruption rate
    (noise tokens / tokens) and mean span length (noise tokens / spans), read off the outputs, are
    within 10% of the config. Masking reaches both ends and is mirror-symmetric: the first token is
    masked as often as the last (T5's original segmentation never masks the first, always the last)."""
    cfg = make_config()
    di = cfg.denoisers.index(denoiser)
    lengths = np.random.default_rng(2).integers(512, 2049, 10_000)
    tokens = text(np.random.default_rng(3), lengths.max())
    n_noise = n_spans = first_masked = last_masked = 0
    for i, length in enumerate(lengths):
        ex = ul2.corrupt(tokens[:length], i, cfg, denoiser=di)
        enc, spans = ex.encoder_input_ids, ex.sentinel_ids.size
        assert ex.num_tokens == length
        n_spans += spans
        n_noise += ex.decoder_target_ids.size - spans - 1  # minus sentinels and eos
        first_masked += enc[1] == SENTINELS[0]  # after the mode token
        last_masked += enc[-1] == SENTINELS[spans - 1]
    rate, mean_span = n_noise / lengths.sum(), n_noise / n_spans
    print(
        f"{denoiser.name}: rate {rate:.4f} (config {denoiser.rate}), mean span {mean_span:.2f} "
        f"(config {denoiser.mean_span}); first/last token masked {first_masked}/{last_masked}"
    )
    assert rate == pytest.approx(denoiser.rate, rel=0.1)
    assert mean_span == pytest.approx(denoiser.mean_span, rel=0.1)
    assert first_masked > 0 and last_masked > 0
    assert stats.binomtest(int(first_masked), int(first_masked + last_masked)).pvalue > P_MIN


def test_span_masks_uniform_over_all_masks_with_given_span_count():
    """Random segmentation: on 8 tokens with 4 noise tokens in 2 spans, every such mask is equally
    likely (chi-square over the masks enumerated by brute force)."""
    d = ul2.Denoiser("T", ul2.SPAN, "NLU", mean_span=2.0, rate=0.5)
    cfg = make_config(denoisers=(d,), encoder_max_length=64, decoder_max_length=64)
    length = 8
    valid = []
    for bits in itertools.product([False, True], repeat=length):
        runs = sum(1 for j in range(length) if bits[j] and (j == 0 or not bits[j - 1]))
        if sum(bits) == round(length * d.rate) and runs == round(sum(bits) / d.mean_span):
            valid.append(bits)
    counts = dict.fromkeys(valid, 0)
    tokens = np.arange(FIRST_TEXT_ID, FIRST_TEXT_ID + length, dtype=np.int32)
    weights = 1 << np.arange(length)  # mask -> integer key
    keys = {int(np.dot(bits, weights)): bits for bits in valid}
    for i in range(10_000):
        targets = ul2.corrupt(tokens, i, cfg).decoder_target_ids
        masked = targets[(targets >= FIRST_TEXT_ID) & (targets < FIRST_TEXT_ID + length)]
        key = int(weights[masked - FIRST_TEXT_ID].sum())
        assert key in keys, masked
        counts[keys[key]] += 1
    assert stats.chisquare(list(counts.values())).pvalue > P_MIN


def test_prefix_lm_split_is_uniform():
    """S: prefix length k uniform on 1..L-1 (chi-square), so the suffix is half the tokens on average."""
    cfg = make_config()
    di = denoiser_index(cfg, "S")
    length = 64
    tokens = text(np.random.default_rng(3), length)
    ks = np.array(
        [ul2.corrupt(tokens, i, cfg, denoiser=di).encoder_input_ids.size - 1 for i in range(10_000)]
    )
    counts = np.bincount(ks, minlength=length)
    assert counts[0] == 0 and counts.size == length
    assert stats.chisquare(counts[1:]).pvalue > P_MIN
    assert np.mean((length - ks) / length) == pytest.approx(0.5, rel=0.1)


def test_deterministic_per_seed_and_index():
    cfg = make_config()
    rng = np.random.default_rng(4)
    seqs = [text(rng, int(n)) for n in rng.integers(1, 300, 50)]
    first = [ul2.corrupt(s, i, cfg) for i, s in enumerate(seqs)]
    # Same (seed, index) in another order and from an equal but separate config: identical.
    again = {i: ul2.corrupt(seqs[i], i, make_config()) for i in reversed(range(len(seqs)))}
    for i, ex in enumerate(first):
        other = again[i]
        assert ex.denoiser_index == other.denoiser_index == ul2.choose_denoiser(i, cfg)
        for field in (
            "encoder_input_ids",
            "decoder_input_ids",
            "decoder_target_ids",
            "sentinel_ids",
        ):
            np.testing.assert_array_equal(getattr(ex, field), getattr(other, field))
    # A forced denoiser equals the mixture's example whenever the mixture picks the same one.
    for i, ex in enumerate(first):
        forced = ul2.corrupt(seqs[i], i, cfg, denoiser=ex.denoiser_index)
        np.testing.assert_array_equal(forced.encoder_input_ids, ex.encoder_input_ids)
    # Another seed or another index changes the corruption.
    long_seq = text(rng, 400)
    x1 = denoiser_index(cfg, "X1")
    base = ul2.corrupt(long_seq, 5, cfg, denoiser=x1).encoder_input_ids
    other_seed = ul2.corrupt(long_seq, 5, make_config(seed=18), denoiser=x1).encoder_input_ids
    other_index = ul2.corrupt(long_seq, 6, cfg, denoiser=x1).encoder_input_ids
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_index)


@pytest.mark.parametrize(
    "weights", [None, (1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0)], ids=["default", "custom"]
)
def test_mixture_weights_honoured(weights):
    denoisers = DENOISERS
    if weights is not None:
        denoisers = tuple(
            dataclasses.replace(d, weight=w) for d, w in zip(DENOISERS, weights, strict=True)
        )
    cfg = make_config(denoisers=denoisers)
    # `choose_denoiser` is the first draw `corrupt` makes; check they agree, then count 10,000 picks.
    tokens = text(np.random.default_rng(5), 16)
    for i in range(500):
        assert ul2.corrupt(tokens, i, cfg).denoiser_index == ul2.choose_denoiser(i, cfg)
    picks = np.array([ul2.choose_denoiser(i, cfg) for i in range(10_000)])
    counts = np.bincount(picks, minlength=len(denoisers))
    w = np.array([d.weight for d in denoisers])
    assert np.all(counts[w == 0] == 0)
    expected = w[w > 0] / w.sum() * picks.size
    assert stats.chisquare(counts[w > 0], expected).pvalue > P_MIN


def test_long_sequences_truncated_to_the_longest_fitting_prefix():
    cfg = make_config(encoder_max_length=96, decoder_max_length=40)
    roomy = make_config()
    tokens = text(np.random.default_rng(6), 5000)
    for di, d in enumerate(cfg.denoisers):
        for i in range(20):
            ex = ul2.corrupt(tokens, i, cfg, denoiser=di)
            check_structure(ex, cfg, tokens)
            assert ex.num_tokens == cfg.max_input_length(d) < tokens.size
        if d.kind == ul2.SPAN:
            # One more token would not fit: its (untruncated) corruption overflows a side.
            longer = ul2.corrupt(tokens[: ex.num_tokens + 1], 0, roomy, denoiser=di)
            assert (
                longer.encoder_input_ids.size > cfg.encoder_max_length
                or longer.decoder_target_ids.size > cfg.decoder_max_length
            )
        else:
            assert ex.num_tokens == (cfg.encoder_max_length - 1) + (cfg.decoder_max_length - 1)


def test_bad_input_is_refused_clearly():
    cfg = make_config()
    with pytest.raises(ValueError, match="empty"):
        ul2.corrupt([], 0, cfg)
    with pytest.raises(ValueError, match="1-D integer"):
        ul2.corrupt(np.zeros((2, 3), np.int32), 0, cfg)
    with pytest.raises(ValueError, match="1-D integer"):
        ul2.corrupt(np.ones(3, np.float32), 0, cfg)
    with pytest.raises(ValueError, match="negative"):
        ul2.corrupt([7, -1, 8], 0, cfg)
    with pytest.raises(ValueError, match="example 3: token 1 is a sentinel"):
        ul2.corrupt([7, SENTINELS[5], 8], 3, cfg, denoiser=0)
    with pytest.raises(ValueError, match="index"):
        ul2.corrupt([7, 8], -1, cfg)
    with pytest.raises(ValueError, match="out of range"):
        ul2.corrupt([7, 8], 0, cfg, denoiser=len(cfg.denoisers))
    with pytest.raises(ValueError, match="sentinels"):
        make_config(sentinel_ids=SENTINELS[:10])
    with pytest.raises(ValueError, match="nlg_id"):
        make_config(nlg_id=None)
    with pytest.raises(ValueError, match="duplicates"):
        make_config(sentinel_ids=SENTINELS + SENTINELS[:1])
    with pytest.raises(ValueError, match="sentinel_ids"):
        make_config(eos_id=SENTINELS[0])
    with pytest.raises(ValueError, match="sum to zero"):
        make_config(denoisers=tuple(dataclasses.replace(d, weight=0.0) for d in DENOISERS))
    with pytest.raises(ValueError, match="cannot hold"):
        make_config(decoder_max_length=2)
    with pytest.raises(ValueError, match="rate"):
        ul2.Denoiser("bad", ul2.SPAN, "NLU", mean_span=3.0, rate=1.5)
    with pytest.raises(ValueError, match="mode"):
        ul2.Denoiser("bad", ul2.PREFIX, "XYZ")


def _examples(cfg: ul2.UL2Config, n: int, max_len: int, seed: int) -> list[ul2.UL2Example]:
    rng = np.random.default_rng(seed)
    return [ul2.corrupt(text(rng, int(rng.integers(1, max_len))), i, cfg) for i in range(n)]


def test_pad_batch_layout_and_loss_mask():
    cfg = make_config(encoder_max_length=160, decoder_max_length=120)
    examples = _examples(cfg, 9, 150, seed=7)
    batch = ul2.pad_batch(examples, 160, 120, pad_id=0, num_rows=11)
    assert set(batch) == set(ul2.BATCH_KEYS)
    for key, value in batch.items():
        assert value.shape[0] == 11 and value.shape[1] == (
            160 if key.startswith("encoder") else 120
        ), key
    assert batch["decoder_loss_mask"].dtype == np.float32
    for row, ex in enumerate(examples + [None, None]):
        ne = 0 if ex is None else ex.encoder_input_ids.size
        nd = 0 if ex is None else ex.decoder_target_ids.size
        np.testing.assert_array_equal(batch["encoder_mask"][row], np.arange(160) < ne)
        np.testing.assert_array_equal(batch["decoder_mask"][row], np.arange(120) < nd)
        np.testing.assert_array_equal(batch["decoder_loss_mask"][row], batch["decoder_mask"][row])
        np.testing.assert_array_equal(batch["encoder_segment_ids"][row], batch["encoder_mask"][row])
        np.testing.assert_array_equal(batch["encoder_input_ids"][row, ne:], 0)
        np.testing.assert_array_equal(batch["decoder_target_ids"][row, nd:], 0)
        if ex is not None:
            np.testing.assert_array_equal(
                batch["encoder_input_ids"][row, :ne], ex.encoder_input_ids
            )
            np.testing.assert_array_equal(
                batch["decoder_input_ids"][row, :nd], ex.decoder_input_ids
            )
            np.testing.assert_array_equal(
                batch["decoder_target_ids"][row, :nd], ex.decoder_target_ids
            )
            np.testing.assert_array_equal(batch["decoder_positions"][row, :nd], np.arange(nd))
            np.testing.assert_array_equal(
                batch["decoder_denoiser_ids"][row, :nd], ex.denoiser_index
            )
        np.testing.assert_array_equal(batch["decoder_denoiser_ids"][row, nd:], -1)
    with pytest.raises(ValueError, match="over the batch lengths"):
        ul2.pad_batch(examples, 10, 120)


def unpack(batch: dict) -> list[tuple[int, int, dict]]:
    """(row, segment, fields) for every packed segment, in row-major order."""
    out = []
    for row in range(batch["encoder_segment_ids"].shape[0]):
        for seg in range(1, batch["encoder_segment_ids"][row].max() + 1):
            e = batch["encoder_segment_ids"][row] == seg
            t = batch["decoder_segment_ids"][row] == seg
            assert np.all(np.diff(np.flatnonzero(e)) == 1) and np.all(
                np.diff(np.flatnonzero(t)) == 1
            )
            np.testing.assert_array_equal(batch["encoder_positions"][row][e], np.arange(e.sum()))
            np.testing.assert_array_equal(batch["decoder_positions"][row][t], np.arange(t.sum()))
            np.testing.assert_array_equal(batch["decoder_loss_mask"][row][t], 1.0)
            fields = {
                k: batch[k][row][e if k.startswith("encoder") else t]
                for k in ("encoder_input_ids", "decoder_input_ids", "decoder_target_ids")
            }
            out.append((row, seg, fields))
        pad = batch["decoder_segment_ids"][row] == 0
        np.testing.assert_array_equal(batch["decoder_loss_mask"][row][pad], 0.0)
        np.testing.assert_array_equal(
            batch["encoder_mask"][row], batch["encoder_segment_ids"][row] > 0
        )
    return out


def same(fields: dict, ex: ul2.UL2Example) -> bool:
    return all(np.array_equal(fields[k], getattr(ex, k)) for k in fields)


def test_pack_batch_first_fit():
    cfg = make_config(encoder_max_length=256, decoder_max_length=128)
    examples = _examples(cfg, 60, 200, seed=8)
    batch, consumed = ul2.pack_batch(examples, 4, 256, 128)
    assert 4 < consumed < len(examples)
    segments = unpack(batch)
    assert len(segments) == consumed
    placed = [None] * consumed
    for row, seg, fields in segments:
        matches = [i for i in range(consumed) if same(fields, examples[i])]
        assert matches, (row, seg)
        placed[matches[0]] = (row, seg)
    assert None not in placed
    # First fit: the next example fits no row.
    enc_used = batch["encoder_mask"].sum(1)
    dec_used = batch["decoder_mask"].sum(1)
    nxt = examples[consumed]
    assert not np.any(
        (enc_used + nxt.encoder_input_ids.size <= 256)
        & (dec_used + nxt.decoder_target_ids.size <= 128)
    )


@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
def test_ul2_batches_cover_every_example_once(pack):
    cfg = make_config(encoder_max_length=200, decoder_max_length=100)
    rng = np.random.default_rng(9)
    seqs = [text(rng, int(n)) for n in rng.integers(1, 250, 37)]
    batches = list(ul2.ul2_batches(seqs, cfg, 4, pack=pack, first_index=100, drop_remainder=False))
    assert all(
        b["encoder_input_ids"].shape == (4, 200) and b["decoder_target_ids"].shape == (4, 100)
        for b in batches
    )
    expected = [ul2.corrupt(s, 100 + i, cfg) for i, s in enumerate(seqs)]
    found = [fields for b in batches for _, _, fields in unpack(b)]
    assert len(found) == len(expected)
    if pack:
        assert len(batches) < len(seqs) / 4
        for ex in expected:
            assert sum(same(f, ex) for f in found) == 1
    else:
        assert all(same(f, ex) for f, ex in zip(found, expected, strict=True))
    # drop_remainder (the default) yields the same batches without the partly filled tail.
    dropped = list(ul2.ul2_batches(seqs, cfg, 4, pack=pack, first_index=100))
    assert 0 < len(dropped) < len(batches)
    if not pack:
        assert len(dropped) == len(seqs) // 4
    for got, want in zip(dropped, batches):
        for key in ul2.BATCH_KEYS:
            np.testing.assert_array_equal(got[key], want[key])
