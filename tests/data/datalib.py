"""Shared by the data tests."""

import numpy as np


class WordTokenizer:
    """A stand-in tokenizer: BOS 2, one id per word (3 + its length), EOS 1; cut at
    `max_length` ids (EOS kept)."""

    pad_id = 0

    def encode(self, texts, max_length=None):
        out = []
        for text in texts:
            ids = [2] + [3 + len(w) for w in text.split()]
            if max_length is not None:
                ids = ids[: max_length - 1]
            out.append(np.array(ids + [1], np.int32))
        return out
