"""Cross-lingual pairs from translation catalogs: a translated message -> its English original.

The source is the gettext catalogs (``.mo``) a package ships, by default Django's (its wheel has
~1,200 catalogs: 12 apps x ~95 locales, each message written by Django's human translators).
Every catalog ``<app>/locale/<locale>/LC_MESSAGES/<domain>.mo`` gives (English msgid, translated
msgstr) pairs:

- query: the translation (the record's task is "BitextMining"); positive: the English message;
- negatives: the English messages of the same split closest to the positive by BM25, skipping
  the positive itself (so a translation's negatives are near-paraphrases in English).

Filtered out: the catalog header, English-variant locales (``en``, ``en_GB``...), untranslated or
empty messages, messages of fewer than `min_words` words (placeholders such as ``%(name)s`` are
kept and count as words), and duplicates (one pair per locale and English message; the first
catalog in path order wins). A plural message gives its singular form.

Split: by app (``conf`` = Django core, ``contrib/admin``, ``contrib/auth``, ...), so every
catalog of an app is in one split; an English message that also occurs in an earlier split
(train, then dev) is dropped from the later one, so no English text is shared between splits.

CLI: ``python -m embeddinggemma_jax.data.build --dataset catalogs``
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

from embeddinggemma_jax.data import building
from embeddinggemma_jax.errors import LocatedError, UserError

NAME = "catalogs"
BUILDER_VERSION = 1
TASK = "BitextMining"  # "task: search result | query: "
_MAGIC = 0x950412DE
_CATALOG = re.compile(r"^(?P<app>.*?)/?locale/(?P<locale>[^/]+)/LC_MESSAGES/(?P<domain>[^/]+)\.mo$")


def read_mo(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog, header excluded.

    A message with a context keeps only its msgid; a plural keeps its singular and first form.
    Malformed files raise `LocatedError` naming the file and the byte offset.
    """
    path = Path(path)
    data = path.read_bytes()

    def fail(what: str, offset: int | None = None) -> LocatedError:
        where = str(path) if offset is None else f"{path} byte {offset}"
        return LocatedError(what, where=where)

    if len(data) < 20:
        raise fail("not a gettext .mo file (too short)")
    for order in "<>":
        if struct.unpack(order + "I", data[:4])[0] == _MAGIC:
            break
    else:
        raise fail("not a gettext .mo file (bad magic number)", 0)
    revision, count, originals, translations = struct.unpack(order + "4I", data[4:20])
    if revision >> 16 not in (0, 1):
        raise fail(f"unsupported .mo revision {revision >> 16}", 4)

    def string(table: int, i: int) -> bytes:
        at = table + 8 * i
        if at + 8 > len(data):
            raise fail(f"string table entry {i} lies past the end of the file", at)
        length, offset = struct.unpack(order + "2I", data[at : at + 8])
        if offset + length > len(data):
            raise fail(f"string {i} lies past the end of the file", at)
        return data[offset : offset + length]

    raw = [(string(originals, i), string(translations, i)) for i in range(count)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            match = re.search(rb"charset=([\w-]+)", msgstr)
            if match:
                charset = match.group(1).decode("ascii")
    out = []
    for i, (msgid, msgstr) in enumerate(raw):
        if msgid == b"":
            continue
        try:
            source = msgid.decode(charset)
            target = msgstr.decode(charset)
        except (UnicodeDecodeError, LookupError) as e:
            raise fail(f"message {i} is not valid {charset}: {e}") from None
        source = source.split("\x04", 1)[-1].split("\x00", 1)[0]  # drop context, plural form
        out.append((source, target.split("\x00", 1)[0]))
    return out


def django_root() -> Path:
    """The installed Django package directory (its catalogs are the default source)."""
    return building.installed_dir(
        "django",
        missing="catalogs: Django is not installed; its translation catalogs are this dataset's "
        "source (pip install 'embeddinggemma-jax[data]', or pip install django)",
    )


def find_catalogs(root: Path) -> list[tuple[str, str, Path]]:
    """(app, locale, path) of every ``.mo`` catalog under `root`, sorted by path."""
    out = []
    for path in sorted(root.rglob("*.mo")):
        match = _CATALOG.match(path.relative_to(root).as_posix())
        if match:
            out.append((match["app"] or ".", match["locale"], path))
    return out


def _words(text: str) -> int:
    return len(text.split())


def collect_pairs(
    root: Path,
    *,
    locales: Sequence[str] | None = None,
    min_words: int = 3,
) -> list[dict]:
    """The filtered, de-duplicated pairs: {"app", "locale", "source", "target"}."""
    catalogs = find_catalogs(root)
    if not catalogs:
        raise UserError(f"catalogs: no gettext catalogs (*/locale/*/LC_MESSAGES/*.mo) under {root}")
    wanted = set(locales) if locales else None
    seen: set[tuple[str, str]] = set()
    pairs = []
    for app, locale, path in catalogs:
        if locale.split("_")[0] == "en" or (wanted is not None and locale not in wanted):
            continue
        for source, target in read_mo(path):
            source, target = source.strip(), target.strip()
            if not target or target == source or _words(source) < min_words:
                continue
            if (locale, source) in seen:
                continue
            seen.add((locale, source))
            pairs.append({"app": app, "locale": locale, "source": source, "target": target})
    return pairs


def _records(pairs: list[dict], num_negatives: int, seed: int) -> tuple[list[dict], dict]:
    sources = sorted({p["source"] for p in pairs})
    index = {s: i for i, s in enumerate(sources)}
    negatives = building.text_negatives(
        sources, sources, [{i} for i in range(len(sources))], num_negatives, seed
    )
    records = [
        {
            "query": p["target"],
            "positive": p["source"],
            "negatives": [sources[j] for j in negatives[index[p["source"]]]],
            "task": TASK,
            "query_id": f"{p['locale']}:{p['source']}",
            "positive_id": p["source"],
        }
        for p in pairs
    ]
    counts = {
        "records": len(pairs),
        "english_messages": len(sources),
        "locales": len({p["locale"] for p in pairs}),
        "apps": sorted({p["app"] for p in pairs}),
    }
    return records, counts


def _retrieval(pairs: list[dict]) -> tuple[dict, dict, dict]:
    return building.text_retrieval(
        pairs,
        doc=lambda p: p["source"],
        doc_prefix="en",
        key=lambda p: (p["locale"], p["target"]),  # one query per translation text in a locale
        text=lambda p: p["target"],
        query_id=lambda p, n: f"{p['locale']}:{n}",
    )


DATASET = building.UnitDataset(
    NAME,
    BUILDER_VERSION,
    (__file__,),
    TASK,
    "language",
    unit=lambda p: p["app"],
    record_id=lambda p: f"{p['locale']}:{p['source']}",
    records=_records,
    retrieval=_retrieval,
    distinct=lambda p: p["source"],  # no English text in two splits
    max_eval_records=5000,
)


def build_catalogs(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    locales: Sequence[str] | None = None,
    min_words: int = 3,
    force: bool = False,
    **splitting,
) -> building.DatasetPaths:
    """Builds (or returns the cached) catalog dataset; see the module docstring.

    Args:
      out_dir: output directory (default: ``<cache>/data/catalogs``).
      root: directory searched for catalogs (default: the installed Django package).
      locales: keep only these locales (e.g. ``["de", "fr", "ja"]``).
      min_words: drop English messages with fewer words.
      force: rebuild even if cached.
      splitting: `building.Splitting` (caps, negatives, held-out shares of whole apps, seed;
        max_eval_records defaults to 5000 here).
    """
    root_path = django_root() if root is None else Path(root)
    return building.build_units(
        DATASET,
        out_dir,
        root_path,
        {"locales": sorted(locales) if locales else None, "min_words": min_words},
        lambda: collect_pairs(root_path, locales=locales, min_words=min_words),
        force=force,
        **splitting,
    )
