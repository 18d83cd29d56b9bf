"""Cross-lingual pairs from Django's translation catalogs: .mo reading, filters, the app split."""

import json
import struct

import pytest

from embeddinggemma_jax.data import catalogs
from embeddinggemma_jax.data.records import parse_record
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.eval.registry import load_task

LOCALES = ["de", "fr", "ja", "pt_BR", "uk"]


def write_mo(path, messages, charset="utf-8"):
    """A little-endian .mo file of {msgid: msgstr} plus a header (the layout gettext reads)."""
    messages = {"": f"Content-Type: text/plain; charset={charset}\n", **messages}
    keys = sorted(messages)
    ids = [k.encode(charset) for k in keys]
    strs = [messages[k].encode(charset) for k in keys]
    n = len(keys)
    start = 28 + 16 * n
    blob, id_table, str_table = b"", [], []
    for table, values in ((id_table, ids), (str_table, strs)):
        for value in values:
            table.append((len(value), start + len(blob)))
            blob += value + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    tables = b"".join(struct.pack("<2I", *e) for e in id_table + str_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + tables + blob)


def test_read_mo_singular_context_plural_and_located_errors(tmp_path):
    path = tmp_path / "x.mo"
    write_mo(
        path,
        {
            "Delete %(name)s now": "%(name)s jetzt löschen",
            "month name\x04May": "Mai",
            "One item was changed\x00%(n)s items were changed": "Ein Eintrag\x00%(n)s Einträge",
        },
    )
    assert sorted(catalogs.read_mo(path)) == [
        ("Delete %(name)s now", "%(name)s jetzt löschen"),
        ("May", "Mai"),
        ("One item was changed", "Ein Eintrag"),
    ]
    good = path.read_bytes()
    (tmp_path / "magic.mo").write_bytes(b"\0" * 4 + good[4:])
    with pytest.raises(LocatedError, match=r"magic.mo byte 0: not a gettext .mo file"):
        catalogs.read_mo(tmp_path / "magic.mo")
    (tmp_path / "cut.mo").write_bytes(good[:60])
    with pytest.raises(LocatedError, match=r"cut.mo byte \d+: string \d+ lies past the end"):
        catalogs.read_mo(tmp_path / "cut.mo")
    write_mo(tmp_path / "latin1.mo", {"Größe ändern bitte": "x"}, charset="latin-1")
    raw = (tmp_path / "latin1.mo").read_bytes().replace(b"charset=latin-1", b"charset=utf-8  ")
    (tmp_path / "latin1.mo").write_bytes(raw)
    with pytest.raises(LocatedError, match=r"latin1.mo: message 1 is not valid utf-8"):
        catalogs.read_mo(tmp_path / "latin1.mo")


def test_filters_on_a_hand_made_tree(tmp_path):
    for app in ("conf", "contrib/admin", "contrib/auth"):
        write_mo(
            tmp_path / app / "locale" / "de" / "LC_MESSAGES" / "django.mo",
            {
                "Two words": "Zwei Wörter",  # too short
                "Enter a valid value.": "Geben Sie einen gültigen Wert ein.",
                "This stays the same": "This stays the same",  # untranslated
                f"Only in {app} here": f"Nur in {app} hier",
            },
        )
        write_mo(tmp_path / app / "locale" / "en_GB" / "LC_MESSAGES" / "django.mo", {"A b c": "d"})
    pairs = catalogs.collect_pairs(tmp_path)
    assert {p["locale"] for p in pairs} == {"de"}  # English variants skipped
    assert [p["source"] for p in pairs].count("Enter a valid value.") == 1  # one per locale
    assert len(pairs) == 4
    with pytest.raises(catalogs.UserError, match="no gettext catalogs"):
        catalogs.collect_pairs(tmp_path / "conf" / "locale" / "de")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_a_real_slice_disjoint_by_app_and_deterministic(tmp_path):
    kwargs = dict(locales=LOCALES, max_records=600, max_eval_records=150)
    built = catalogs.build_catalogs(tmp_path / "a", **kwargs)
    assert not built.cached
    splits = {s: read_jsonl(getattr(built, s)) for s in ("train", "dev", "test")}
    assert len(splits["train"]) == 600 and 0 < len(splits["dev"]) <= 150
    apps = {s: set(v["apps"]) for s, v in built.manifest["splits"].items()}
    assert not (
        apps["train"] & apps["dev"] or apps["train"] & apps["test"] or apps["dev"] & apps["test"]
    )
    english = {s: {r["positive"] for r in rows} for s, rows in splits.items()}
    assert not (english["train"] & english["dev"] or english["train"] & english["test"])
    assert not english["dev"] & english["test"]
    for i, record in enumerate(splits["train"]):
        parse_record(record, where=f"train.jsonl line {i + 1}")
        assert record["query_id"].split(":", 1)[0] in LOCALES
        assert len(record["positive"].split()) >= 3 and record["query"] != record["positive"]
        assert len(record["negatives"]) == 3 and record["positive"] not in record["negatives"]
        assert set(record["negatives"]) <= english["train"]  # negatives from the same split
    assert any("%(" in r["positive"] and "%(" in r["query"] for r in splits["train"])
    for split in ("dev", "test"):
        task = load_task(getattr(built, f"{split}_task"))
        assert task.type == "Retrieval" and task.query_prompt == "BitextMining"
        assert {text for _, text in task.corpus.values()} == english[split]
        assert 0 < len(task.queries) <= 150
    # Deterministic: a second build elsewhere is byte-identical; the same call is cached.
    catalogs.build_catalogs(tmp_path / "b", **kwargs)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "dev/queries.jsonl", "test/qrels.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert catalogs.build_catalogs(tmp_path / "a", **kwargs).cached
