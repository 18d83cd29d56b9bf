"""Perl FAQ question -> answer pairs (optional source: Debian perl-doc): POD parsing, file split."""

import json

import pytest

from embeddinggemma_jax.data import perlfaq
from embeddinggemma_jax.data.records import parse_record
from embeddinggemma_jax.errors import LocatedError, UserError
from embeddinggemma_jax.eval.registry import load_task

POD = """=head1 NAME

perlfaq{n} - Topic {n}

=head1 DESCRIPTION

=head2 How do I frobnicate the {n}th C<%hash>?
X<frobnicate>

Use L<the frob docs|perlfrob> and C<< $a <=> $b >> on topic {n}: E<lt>alwaysE<gt>.

    my %h = (a => {n});   # C<kept> in code

=begin html

<p>skipped</p>

=end html

=head2 Why is topic {n} slow?

Because I<{n}> is large, see L<perlfunc/"sort">.

=cut
"""


def write_pods(root, n):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (root / f"perlfaq{i}.pod").write_text(POD.format(n=i))
    (root / "perlfaq.pod").write_text("=head2 The index, not read\n\nx\n")


def test_read_pod_resolves_formatting_and_locates_errors(tmp_path):
    write_pods(tmp_path, 1)
    pairs = perlfaq.read_pod(tmp_path / "perlfaq1.pod")
    assert pairs == [
        (
            "How do I frobnicate the 1th %hash?",
            "Use the frob docs and $a <=> $b on topic 1: <always>.\n\n"
            "    my %h = (a => 1);   # C<kept> in code",
        ),
        ("Why is topic 1 slow?", "Because 1 is large, see perlfunc/sort."),
    ]
    bad = tmp_path / "bad.pod"
    bad.write_text("=head2 Fine?\n\nText\nwith C<open\ncode.\n")
    with pytest.raises(LocatedError, match=r"bad.pod line 3: unterminated formatting code"):
        perlfaq.read_pod(bad)
    bad.write_text("=head1 X\n\n=head2 \n\nText.\n")
    with pytest.raises(LocatedError, match=r"bad.pod line 3: =head2 without a question"):
        perlfaq.read_pod(bad)


def test_build_splits_by_file(tmp_path):
    write_pods(tmp_path / "pod", 6)
    built = perlfaq.build_perlfaq(tmp_path / "out", root=tmp_path / "pod", num_negatives=1)
    files = {s: set(v["files"]) for s, v in built.manifest["splits"].items()}
    assert set().union(*files.values()) == {f"perlfaq{i}" for i in range(1, 7)}
    assert not (files["train"] & files["dev"] or files["train"] & files["test"])
    assert not files["dev"] & files["test"]
    for i, line in enumerate(built.train.read_text().splitlines()):
        record = json.loads(line)
        parse_record(record, where=f"train.jsonl line {i + 1}")
        assert record["title"] in files["train"] and record["negatives"] != [record["positive"]]
    task = load_task(built.test_task)
    assert len(task.queries) == 2 * len(files["test"])


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(perlfaq.glob, "glob", lambda pattern: [])
    with pytest.raises(UserError, match=r"Debian package perl-doc \(apt-get install perl-doc\)"):
        perlfaq.build_perlfaq()


def test_the_installed_faq(tmp_path):
    try:
        root = perlfaq.faq_dir()
    except UserError:
        pytest.skip("optional source: the Debian package perl-doc is not installed")
    built = perlfaq.build_perlfaq(tmp_path, root=root)
    splits = built.manifest["splits"]
    assert sum(s["records"] for s in splits.values()) > 250
    for line in built.train.read_text().splitlines():
        record = json.loads(line)
        assert record["query"].endswith("?")
        assert "X<" not in record["positive"] and "L<" not in record["positive"].split("\n")[0]
