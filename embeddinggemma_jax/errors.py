"""The errors a user can cause, told apart from programming errors.

A `UserError` is a mistake in what the user gave us (a file, a record, a config key, a flag, a
path); its message is one line that says where and what. Command lines print it as
``error: <where>: <what>`` and exit with status 2 (`embeddinggemma_jax.cli`); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A user mistake; ``str(e)`` is the whole one-line message, naming where it is."""


class LocatedError(UserError, ValueError):
    """A problem at a place in the user's input: a file and line, a config key, a flag.

    Args:
      message: what is wrong.
      where: e.g. ``"train.jsonl line 12"``, ``"config.optimizer.lr"``, ``"--dims"``.
      field: the record field, when there is one.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.where = where
        self.field = field
        self.reason = message
        parts = [p for p in (where, f"field {field!r}" if field else None) if p]
        super().__init__(": ".join([*parts, message]))


def did_you_mean(name: str, choices, *, prefix: str = "") -> str:
    """``" (did you mean PREFIX+X?)"`` for the closest of `choices` to `name`, else ``""``.

    For messages about a mistyped key, flag or name: ``f"no such key{did_you_mean(k, keys)}"``.
    """
    import difflib

    choices = [str(c) for c in choices]
    # A choice that starts with the name (init -> init_from) beats one merely as similar.
    starts = [c for c in choices if name and c.startswith(name)]
    close = difflib.get_close_matches(name, starts or choices, n=1, cutoff=0.6 if not starts else 0)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""
