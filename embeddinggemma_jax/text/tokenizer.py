"""SentencePiece tokenizer that reproduces the Hugging Face tokenizer of EmbeddingGemma.

The released checkpoint's `tokenizer.json` is a fast (Rust) BPE tokenizer converted from the very
`tokenizer.model` we load here. The two agree piece for piece (identity normaliser, no dummy
prefix, runs of spaces, newlines and tabs handled by the same user-defined pieces, byte fallback)
except where the Hugging Face tokenizer matches its "added tokens" in the raw text before
normalising it, which SentencePiece does not:

- the strings of the control and unknown pieces (`<pad>`, `<eos>`, `<bos>`, `<unk>`) become those
  ids even inside a text (`"a<eos>b"` -> `[a, EOS, b]`), where SentencePiece spells them out;
- a literal run of U+2581 ("▁", SentencePiece's whitespace symbol) in the text is matched as the
  user-defined piece "▁▁..." on its own, where SentencePiece first turns spaces into "▁" and so
  merges the run with neighbouring spaces (`"a ▁▁ b"`).

We split each text on those strings first and encode the pieces between them with SentencePiece
(one batched call), exactly as the reference does.

One deliberate difference: the checkpoint's `added_tokens.json` adds `<image_soft_token>` with id
262144, which lies outside both `tokenizer.model` and the model's embedding table (vocab 262,144),
so the reference cannot embed a text containing it at all; we tokenize that string as plain text.

Post-processing follows `tokenizer(texts, truncation=True, max_length=L)`: BOS first, EOS last,
the text's pieces truncated on the right so that BOS and EOS always survive; padding is on the
right with the pad id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

__all__ = ["Tokenizer"]

TOKENIZER_FILENAME = "tokenizer.model"


# SentencePiece piece types (sentencepiece_model.proto: ModelProto.SentencePiece.Type).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4
_SPACE = "\u2581"  # SentencePiece's whitespace meta symbol


def _piece_types(sp: spm.SentencePieceProcessor) -> list[tuple[str, int]]:
    """(piece, type) for every id, read from the serialized model."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto.FromString(sp.serialized_model_proto())
    return [(p.piece, p.type) for p in proto.pieces]


def _resolve_model_path(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / TOKENIZER_FILENAME
        if not candidate.is_file():
            raise FileNotFoundError(
                f"no {TOKENIZER_FILENAME} in folder {str(p)!r} "
                f"(expected a SentencePiece model at {str(candidate)!r})"
            )
        return candidate
    if not p.is_file():
        raise FileNotFoundError(
            f"SentencePiece model not found: {str(p)!r} "
            f"(pass a path to {TOKENIZER_FILENAME} or to a folder containing it)"
        )
    return p


# Gemma's special ids and pieces, which the Embedder, the trainer and the checkpoint export expect.
GEMMA_SPECIAL_PIECES = dict(
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    pad_piece="<pad>",
    eos_piece="<eos>",
    bos_piece="<bos>",
    unk_piece="<unk>",
)


def train_bpe(
    corpus: str | os.PathLike, model_prefix: str | os.PathLike, vocab_size: int, **options
) -> Path:
    """Trains a BPE SentencePiece model on `corpus` (one text per line) with Gemma's special ids
    and pieces; `options` go to `SentencePieceTrainer.train`. Returns `<model_prefix>.model`."""
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(model_prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        minloglevel=2,
        **GEMMA_SPECIAL_PIECES,
        **options,
    )
    return Path(f"{model_prefix}.model")


def check_texts(texts: Sequence[str], what: str = "texts") -> None:
    """TypeError unless texts is a sequence of str (a single str is refused, not iterated);
    ValueError for a str holding a lone surrogate (not Unicode text)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"{what} must be a sequence of strings, got a single {type(texts).__name__}; "
            f"wrap it in a list: [{what[:-1] if what.endswith('s') else what}]"
        )
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be str, got {type(t).__name__}: {t!r:.80}")
        if not t.isascii():  # a lone surrogate ("\ud800") is a str SentencePiece cannot take
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"{what}[{i}] is not valid Unicode: a lone surrogate at character {e.start}"
                ) from None


class Tokenizer:
    """Token ids for EmbeddingGemma from a SentencePiece model, matching the Hugging Face tokenizer.

    Args:
      path: a `tokenizer.model` file, or a folder containing one (e.g. a checkpoint folder).
      add_bos / add_eos: add BOS first / EOS last (the checkpoint's tokenizer_config sets both).
      parse_special: match the strings of control pieces (`<eos>`, `<bos>`, `<pad>`, `<unk>` for
        Gemma) and of "▁"-run pieces in the raw text, as the Hugging Face tokenizer does (see the
        module docstring). False: plain SentencePiece.
      num_threads: threads for SentencePiece's batch encoder (None: its default, all cores).

    Works with any SentencePiece model (e.g. a small one trained by the quickstart): BOS/EOS/pad
    ids come from the model itself, falling back to pieces named `<bos>`/`<s>`, `<eos>`/`</s>`,
    `<pad>`, and, for padding only, to id 0 (padded positions are masked out).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        add_bos: bool = True,
        add_eos: bool = True,
        parse_special: bool = True,
        num_threads: int | None = None,
    ):
        self.path = _resolve_model_path(path)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"not a valid SentencePiece model: {str(self.path)!r} ({e})") from e
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.parse_special = parse_special
        self.num_threads = num_threads

        self.vocab_size: int = self._sp.get_piece_size()
        self.bos_id: int = self._special_id(self._sp.bos_id(), ("<bos>", "<s>"))
        self.eos_id: int = self._special_id(self._sp.eos_id(), ("<eos>", "</s>"))
        self.unk_id: int = self._sp.unk_id()
        pad = self._special_id(self._sp.pad_id(), ("<pad>",))
        self.pad_id: int = 0 if pad < 0 else pad
        if add_bos and self.bos_id < 0:
            raise ValueError(f"{str(self.path)!r} has no BOS piece; pass add_bos=False")
        if add_eos and self.eos_id < 0:
            raise ValueError(f"{str(self.path)!r} has no EOS piece; pass add_eos=False")
        self._prefix = [self.bos_id] if add_bos else []
        self._suffix = [self.eos_id] if add_eos else []

        # Strings the reference matches in the raw text, before SentencePiece's normalisation, and
        # turns into their ids: control and unknown pieces (which SentencePiece never produces from
        # text) and user-defined pieces containing the whitespace meta symbol "▁" (SentencePiece
        # matches those after turning spaces into "▁", so a literal "▁▁" next to a space would
        # otherwise merge with it). Other user-defined pieces match identically in both.
        self.raw_tokens: dict[str, int] = {}  # string -> id
        for i, (piece, kind) in enumerate(_piece_types(self._sp)):
            if not piece:
                continue
            if kind in (_CONTROL, _UNKNOWN) or (kind == _USER_DEFINED and _SPACE in piece):
                self.raw_tokens[piece] = i
        # Longest first: the alternation then matches leftmost-longest like the reference.
        strings = sorted(self.raw_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, strings))) if strings else None

    def _special_id(self, sp_id: int, names: tuple[str, ...]) -> int:
        if sp_id >= 0:
            return sp_id
        for name in names:
            i = self._sp.piece_to_id(name)
            if i != self._sp.unk_id() or name == self._sp.id_to_piece(i):
                return i
        return -1

    @property
    def num_special_added(self) -> int:
        """How many ids `encode` adds around each text (2 for BOS + EOS)."""
        return len(self._prefix) + len(self._suffix)

    def __repr__(self) -> str:
        return (
            f"Tokenizer({str(self.path)!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id})"
        )

    # Encoding ------------------------------------------------------------------------------

    def _segments(self, text: str) -> list[str | int]:
        """Splits text into plain-text pieces (str) and special-token ids (int)."""
        if self._special_re is None or not self.parse_special:
            return [text]
        out: list[str | int] = []
        start = 0
        for m in self._special_re.finditer(text):
            if m.start() > start:
                out.append(text[start : m.start()])
            out.append(self.raw_tokens[m.group()])
            start = m.end()
        if start < len(text) or not out:
            out.append(text[start:])
        return out

    def encode_pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without BOS/EOS and without truncation."""
        check_texts(texts)
        texts = list(texts)
        if self._special_re is None or not self.parse_special:
            return self._sp.encode(texts, num_threads=self.num_threads) if texts else []
        # Fast path: one batched SentencePiece call over all plain-text segments.
        segmented = [self._segments(t) for t in texts]
        plain = [s for segs in segmented for s in segs if isinstance(s, str)]
        encoded = iter(self._sp.encode(plain, num_threads=self.num_threads) if plain else [])
        out = []
        for segs in segmented:
            if len(segs) == 1 and isinstance(segs[0], str):
                out.append(next(encoded))
                continue
            ids: list[int] = []
            for s in segs:
                if isinstance(s, str):
                    ids.extend(next(encoded))
                else:
                    ids.append(s)
            out.append(ids)
        return out

    def _check_max_length(self, max_length: int | None) -> None:
        if max_length is None:
            return
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise TypeError(f"max_length must be an int or None, got {type(max_length).__name__}")
        if max_length < max(self.num_special_added, 1):
            # The reference silently skips truncation here (it logs an error); we refuse.
            raise ValueError(
                f"max_length={max_length} cannot hold the {self.num_special_added} special "
                f"tokens (BOS/EOS) plus any text; use max_length >= {max(self.num_special_added, 1)}"
            )

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[np.ndarray]:
        """Token ids per text, as `hf_tokenizer(texts, truncation=True, max_length=max_length)`.

        Args:
          texts: a sequence of strings (a single str is refused: wrap it in a list).
          max_length: total length including BOS and EOS; longer texts lose pieces from the end
            of the text, keeping the final EOS. None: no truncation.
        Returns:
          one int32 array per text: [BOS, pieces..., EOS].
        """
        self._check_max_length(max_length)
        keep = None if max_length is None else int(max_length) - self.num_special_added
        out = []
        for ids in self.encode_pieces(texts):
            if keep is not None and len(ids) > keep:
                ids = ids[:keep]
            out.append(np.asarray(self._prefix + ids + self._suffix, dtype=np.int32))
        return out

    def pad(
        self, seqs: Sequence[Sequence[int] | np.ndarray], length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-pads sequences with the pad id.

        Args:
          seqs: B sequences of token ids.
          length: T; None pads to the longest sequence. A longer sequence is an error (truncate
            with `encode(..., max_length=...)` instead).
        Returns:
          ids [B, T] int32, mask [B, T] bool (True = real token).
        """
        lengths = [len(s) for s in seqs]
        longest = max(lengths, default=0)
        if length is None:
            length = longest
        elif longest > length:
            i = lengths.index(longest)
            raise ValueError(
                f"sequence {i} has {longest} tokens, more than length={length}; "
                "truncate with encode(..., max_length=...) first"
            )
        ids = np.full((len(seqs), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(seqs), length), dtype=bool)
        for b, s in enumerate(seqs):
            ids[b, : lengths[b]] = s
            mask[b, : lengths[b]] = True
        return ids, mask

    def batch_encode(
        self, texts: Sequence[str], max_length: int | None = None, *, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`encode` then `pad`: ids [B, T] int32 and mask [B, T] bool.

        T is `length` if given (must be >= every encoded length), else the longest encoded text.
        """
        return self.pad(self.encode(texts, max_length), length)

    # Decoding ------------------------------------------------------------------------------

    def decode(
        self, ids: Sequence[int] | np.ndarray, *, skip_special: bool = True
    ) -> str | list[str]:
        """Text of token ids: [T] -> str, [B, T] -> list of B str.

        With skip_special, pad/BOS/EOS and other control ids are dropped; otherwise they are
        spelled out as their pieces (`<bos>`, `<eos>`, ...).
        """
        arr = np.asarray(ids)
        if arr.ndim == 2:
            return [self.decode(row, skip_special=skip_special) for row in arr]
        if arr.ndim != 1:
            raise ValueError(f"decode expects [T] or [B, T] ids, got shape {arr.shape}")
        bad = (arr < 0) | (arr >= self.vocab_size)
        if bad.any():
            raise ValueError(
                f"token id {int(arr[bad][0])} outside the vocabulary [0, {self.vocab_size})"
            )
        parts: list[str] = []
        run: list[int] = []
        for i in arr.tolist():
            if self._sp.is_control(i):
                if not skip_special:
                    parts.append(self._sp.decode(run))
                    parts.append(self._sp.id_to_piece(i))
                    run = []
            else:
                run.append(i)
        parts.append(self._sp.decode(run))
        return "".join(parts)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)
