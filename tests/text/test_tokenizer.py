"""Tokenizer: fast tests on the shared Gemma 3 tokenizer.model (raw SentencePiece as the reference
for the plain cases), and slow parity tests against the checkpoint's Hugging Face tokenizer."""

import json
import pickle
import random
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
from texts import LONG_TEXT_600, LONG_TEXT_3000, PARITY_TEXTS

from embeddinggemma_jax.text import DEFAULT_PROMPTS, Tokenizer, apply_prompt, document_prompt

SPECIAL_STRINGS = ("<eos>", "<bos>", "<pad>", "<unk>", "▁")
PLAIN_TEXTS = [t for t in PARITY_TEXTS if not any(s in t for s in SPECIAL_STRINGS)]
MAX_LENGTHS = [None, 2048, 16, 3, 2]


@pytest.fixture(scope="module")
def tok(gemma_tokenizer_model) -> Tokenizer:
    return Tokenizer(gemma_tokenizer_model)


@pytest.fixture(scope="module")
def sp(gemma_tokenizer_model) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(gemma_tokenizer_model))


def _fuzz_texts(n: int, seed: int) -> list[str]:
    """Random concatenations of the fragments where SentencePiece and the reference could differ."""
    atoms = [" ", "  ", "▁", "▁▁", "\n", "\n\n", "\t", "\r", "<", ">", "eos", "<eos>", "<bos>"]
    atoms += ["<pad>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<table>", "</td>", "<unused3>"]
    atoms += ["<mask>", "[multimodal]", "<s>", "</s>", "<<eos>>", "<eo", "s>", "x▁y", " ▁ "]
    atoms += ["a", "the", "Hello", "1", "23", "456", "中文", "日本", "한", "ع", "й", "é", "e\u0301"]
    atoms += ["😀", "👍🏽", "\u200b", "\u00a0", "\x00", "\ue000", "𠀀", "ﬁ", "Ａ", "\u3000"]
    rng = random.Random(seed)
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# --- Loading -------------------------------------------------------------------------------


def test_loads_from_file_and_folder(gemma_tokenizer_model, tok, sp):
    from_folder = Tokenizer(gemma_tokenizer_model.parent)
    assert from_folder.path == tok.path
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (
        sp.get_piece_size(),
        sp.bos_id(),
        sp.eos_id(),
        sp.pad_id(),
    )
    # The ids the model API documents (BOS=2, EOS=1, pad=0) are the ones the model file says.
    assert (sp.id_to_piece(tok.bos_id), sp.id_to_piece(tok.eos_id)) == ("<bos>", "<eos>")
    assert sp.id_to_piece(tok.pad_id) == "<pad>"
    assert "vocab_size" in repr(tok)


def test_missing_paths_name_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "tokenizer.model"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer(missing)
    with pytest.raises(FileNotFoundError, match=f"no tokenizer.model in folder.*{tmp_path.name}"):
        Tokenizer(tmp_path)


def test_invalid_model_file(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="not a valid SentencePiece model"):
        Tokenizer(bad)


# --- Encoding --------------------------------------------------------------------------------


def test_plain_texts_are_bos_sentencepiece_eos(tok, sp):
    got = tok.encode(PLAIN_TEXTS)
    assert len(got) == len(PLAIN_TEXTS)
    for text, ids in zip(PLAIN_TEXTS, got, strict=True):
        assert ids.dtype == np.int32
        assert ids.tolist() == [sp.bos_id(), *sp.encode(text), sp.eos_id()], repr(text)


def test_empty_text_and_empty_batch(tok):
    assert tok.encode([""])[0].tolist() == [tok.bos_id, tok.eos_id]
    assert tok.encode([]) == []
    ids, mask = tok.batch_encode([])
    assert ids.shape == mask.shape == (0, 0)


def test_special_strings_in_text_become_their_ids(tok, sp):
    text = "a<eos>b <start_of_turn>c<unk><pad><bos>"
    want = [sp.bos_id(), *sp.encode("a"), sp.eos_id(), *sp.encode("b <start_of_turn>c")]
    want += [sp.unk_id(), sp.pad_id(), sp.bos_id(), sp.eos_id()]
    assert tok.encode([text])[0].tolist() == want
    # Adjacent and overlapping-looking strings: leftmost-longest, no partial matches.
    assert tok.encode(["<eos><eos>"])[0].tolist() == [sp.bos_id(), *[sp.eos_id()] * 3]
    assert tok.encode(["<eo"])[0].tolist() == [sp.bos_id(), *sp.encode("<eo"), sp.eos_id()]
    # parse_special=False is plain SentencePiece.
    plain = Tokenizer(tok.path, parse_special=False)
    assert plain.encode([text])[0].tolist() == [sp.bos_id(), *sp.encode(text), sp.eos_id()]


def test_literal_space_symbol_runs_are_matched_before_normalisation(tok, sp):
    # SentencePiece alone would merge the literal "▁▁" with the spaces around it.
    text = "a ▁▁ b"
    want = [sp.bos_id(), *sp.encode("a "), sp.piece_to_id("▁▁"), *sp.encode(" b"), sp.eos_id()]
    assert tok.encode([text])[0].tolist() == want
    assert want[1:-1] != sp.encode(text)


@pytest.mark.parametrize("max_length", [2048, 16, 3, 2])
def test_truncation_keeps_bos_and_eos(tok, max_length):
    texts = apply_prompt(DEFAULT_PROMPTS["query"], PARITY_TEXTS) + PARITY_TEXTS
    full = tok.encode(texts)
    cut = tok.encode(texts, max_length=max_length)
    for f, c in zip(full, cut, strict=True):
        want = f if len(f) <= max_length else np.concatenate([f[: max_length - 1], f[-1:]])
        np.testing.assert_array_equal(c, want)
        assert len(c) <= max_length and c[0] == tok.bos_id and c[-1] == tok.eos_id
    assert any(len(f) > max_length for f in full)


def test_bad_arguments(tok):
    with pytest.raises(TypeError, match="single str"):
        tok.encode("hello")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got int"):
        tok.encode(["ok", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] must be str, got bytes"):
        tok.encode([b"bytes"])
    for bad in (0, 1, -5):
        with pytest.raises(ValueError, match="cannot hold"):
            tok.encode(["x"], max_length=bad)
    with pytest.raises(TypeError, match="max_length"):
        tok.encode(["x"], max_length=True)
    with pytest.raises(TypeError, match="max_length"):
        tok.encode(["x"], max_length=16.0)


# --- Padding, batches, decoding -------------------------------------------------------------


def test_pad_layout(tok):
    seqs = tok.encode(["a longer text with several words", "", "short"])
    lengths = [len(s) for s in seqs]
    ids, mask = tok.pad(seqs)
    assert ids.shape == mask.shape == (3, max(lengths))
    assert ids.dtype == np.int32 and mask.dtype == np.bool_
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(ids[b, : len(s)], s)
        assert (ids[b, len(s) :] == tok.pad_id).all()
        assert mask[b].tolist() == [True] * len(s) + [False] * (ids.shape[1] - len(s))
    ids2, mask2 = tok.pad(seqs, length=max(lengths) + 5)
    assert ids2.shape == (3, max(lengths) + 5)
    np.testing.assert_array_equal(ids2[:, : ids.shape[1]], ids)
    assert not mask2[:, ids.shape[1] :].any()
    with pytest.raises(ValueError, match="sequence 0 has"):
        tok.pad(seqs, length=max(lengths) - 1)


def test_batch_encode_is_encode_then_pad(tok):
    texts = PARITY_TEXTS[:20]
    ids, mask = tok.batch_encode(texts, max_length=8)
    want_ids, want_mask = tok.pad(tok.encode(texts, max_length=8))
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(mask, want_mask)
    ids, mask = tok.batch_encode(texts, max_length=8, length=12)
    assert ids.shape == (len(texts), 12)


def test_decode_round_trip(tok):
    texts = [t for t in PLAIN_TEXTS if len(t) < 200]
    ids, _ = tok.batch_encode(texts)
    assert tok.decode(ids) == texts
    assert tok.decode(ids[0]) == texts[0]
    assert tok.decode(tok.encode(["hi"])[0], skip_special=False) == "<bos>hi<eos>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_pickle_round_trip(tok):
    clone = pickle.loads(pickle.dumps(tok))
    texts = PARITY_TEXTS[:30] + ["x<eos>y ▁▁ z"]
    for a, b in zip(tok.encode(texts), clone.encode(texts), strict=True):
        np.testing.assert_array_equal(a, b)


def test_thread_count_does_not_change_ids(gemma_tokenizer_model, tok):
    one = Tokenizer(gemma_tokenizer_model, num_threads=1)
    texts = PARITY_TEXTS + _fuzz_texts(200, seed=1)
    for a, b in zip(tok.encode(texts), one.encode(texts), strict=True):
        np.testing.assert_array_equal(a, b)


# --- Any SentencePiece model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "corpus.txt"
    path.write_text(LONG_TEXT_3000 + "\n" + LONG_TEXT_600, encoding="utf-8")
    return path


def _train(corpus, prefix, **kwargs):
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=200,
        model_type="bpe",
        minloglevel=2,
        **kwargs,
    )
    return prefix.with_suffix(".model")


def test_other_sentencepiece_model_ids_come_from_the_file(small_corpus, tmp_path):
    # SentencePiece's own defaults (unk=0, bos=1, eos=2, no pad), not Gemma's.
    path = _train(small_corpus, tmp_path / "default")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    tok = Tokenizer(path)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (sp.bos_id(), sp.eos_id(), 200)
    assert sp.pad_id() < 0 and tok.pad_id == 0  # no pad piece: padding uses id 0 (masked)
    # Its control pieces ("<s>") are matched in the text like Gemma's "<bos>".
    ids = tok.encode(["def wrap(text): <s> ok"])[0].tolist()
    want = [sp.bos_id(), *sp.encode("def wrap(text): "), sp.bos_id(), *sp.encode(" ok")]
    assert ids == [*want, sp.eos_id()]

    # Gemma-style ids given explicitly when training are read back.
    path = _train(small_corpus, tmp_path / "gemma_ids", pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    tok = Tokenizer(path)
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)


def test_model_without_bos(small_corpus, tmp_path):
    path = _train(small_corpus, tmp_path / "nobos", bos_id=-1)
    with pytest.raises(ValueError, match="no BOS piece"):
        Tokenizer(path)
    tok = Tokenizer(path, add_bos=False)
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert tok.encode(["ab"], max_length=2)[0].tolist() == [*sp.encode("ab")[:1], sp.eos_id()]
    with pytest.raises(ValueError, match="cannot hold"):
        tok.encode(["ab"], max_length=0)


# --- The parity corpus ----------------------------------------------------------------------


def test_parity_corpus_is_varied(tok):
    assert len(PARITY_TEXTS) >= 60
    assert "" in PARITY_TEXTS and any(len(t) == 1 for t in PARITY_TEXTS)
    assert len(set(PARITY_TEXTS)) == len(PARITY_TEXTS)
    scripts = {
        unicodedata.name(c).split()[0]
        for t in PARITY_TEXTS
        for c in t
        if c.isalpha() and unicodedata.name(c, "").split()
    }
    for script in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "ARABIC", "HEBREW", "DEVANAGARI"):
        assert script in scripts, script
    for script in ("THAI", "CYRILLIC", "GREEK", "BENGALI", "TAMIL", "GEORGIAN", "ARMENIAN"):
        assert script in scripts, script
    assert any("\t" in t for t in PARITY_TEXTS) and any("\n\n" in t for t in PARITY_TEXTS)


def test_long_text_token_counts(tok):
    n600, n3000 = (len(ids) for ids in tok.encode([LONG_TEXT_600, LONG_TEXT_3000]))
    # ~600 tokens crosses the 257-token local window; ~3,000 is past the 2,048 maximum length.
    assert 500 <= n600 <= 700, n600
    assert 2600 <= n3000 <= 3500, n3000
    prompted = tok.encode(apply_prompt(DEFAULT_PROMPTS["query"], [LONG_TEXT_3000]), 2048)[0]
    assert len(prompted) == 2048


# --- Parity with the Hugging Face tokenizer of the checkpoint -------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(real_checkpoint):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(real_checkpoint))


@pytest.fixture(scope="module")
def real_tok(real_checkpoint) -> Tokenizer:
    return Tokenizer(real_checkpoint)


def _hf_ids(hf_tokenizer, texts, max_length):
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
    return hf_tokenizer(texts, **kwargs)["input_ids"]


@pytest.mark.slow
def test_reference_adds_bos_and_eos_and_pads_right(real_checkpoint, hf_tokenizer, real_tok):
    config = json.loads((real_checkpoint / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] and config["add_eos_token"]
    assert hf_tokenizer.padding_side == hf_tokenizer.truncation_side == "right"
    assert hf_tokenizer.bos_token_id == real_tok.bos_id
    assert hf_tokenizer.eos_token_id == real_tok.eos_id
    assert hf_tokenizer.pad_token_id == real_tok.pad_id


@pytest.mark.slow
@pytest.mark.parametrize("max_length", MAX_LENGTHS)
@pytest.mark.parametrize(
    "prompt",
    [None, DEFAULT_PROMPTS["query"], DEFAULT_PROMPTS["STS"], document_prompt("A <eos> title")],
)
def test_ids_equal_reference_on_parity_texts(hf_tokenizer, real_tok, prompt, max_length):
    texts = PARITY_TEXTS if prompt is None else apply_prompt(prompt, PARITY_TEXTS)
    want = _hf_ids(hf_tokenizer, texts, max_length)
    got = real_tok.encode(texts, max_length=max_length)
    for text, w, g in zip(texts, want, got, strict=True):
        assert g.tolist() == w, repr(text[:80])


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [2048, 16])
def test_padded_batch_equals_reference(hf_tokenizer, real_tok, max_length):
    texts = apply_prompt(DEFAULT_PROMPTS["document"], PARITY_TEXTS)
    want = hf_tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="np"
    )
    ids, mask = real_tok.batch_encode(texts, max_length=max_length)
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"].astype(bool))


@pytest.mark.slow
def test_ids_equal_reference_on_fuzzed_texts(hf_tokenizer, real_tok):
    texts = _fuzz_texts(3000, seed=0)
    for text, w, g in zip(texts, _hf_ids(hf_tokenizer, texts, None), real_tok.encode(texts)):
        assert g.tolist() == w, repr(text)


@pytest.mark.slow
def test_long_text_token_counts_with_reference(hf_tokenizer):
    counts = [len(ids) for ids in _hf_ids(hf_tokenizer, [LONG_TEXT_600, LONG_TEXT_3000], None)]
    assert 500 <= counts[0] <= 700 and 2600 <= counts[1] <= 3500, counts


@pytest.mark.slow
def test_image_soft_token_is_outside_the_model_vocabulary(real_checkpoint, hf_tokenizer, real_tok):
    # The one string where we deliberately differ: the reference maps it to an added id that the
    # model's embedding table does not have (so the reference cannot embed it); we keep it as text.
    vocab_size = json.loads((real_checkpoint / "config.json").read_text())["vocab_size"]
    (ref_id,) = hf_tokenizer("<image_soft_token>", add_special_tokens=False)["input_ids"]
    assert ref_id >= vocab_size
    ours = real_tok.encode(["<image_soft_token>"])[0]
    assert (ours < vocab_size).all() and real_tok.decode(ours) == "<image_soft_token>"


@pytest.mark.slow
def test_reference_ignores_too_small_max_length(hf_tokenizer, real_tok):
    # The reference silently skips truncation when max_length cannot hold BOS and EOS; we refuse.
    text = "several words that would need truncating"
    assert len(_hf_ids(hf_tokenizer, [text], 1)[0]) > 1
    with pytest.raises(ValueError, match="cannot hold"):
        real_tok.encode([text], max_length=1)
