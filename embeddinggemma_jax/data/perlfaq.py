"""Question -> answer pairs from the Perl FAQ (``perlfaq1.pod`` ... ``perlfaq9.pod``,
``perlunifaq.pod``: ~330 questions, written and maintained by Perl's authors).

OPTIONAL source: the FAQ ships in the Debian package ``perl-doc`` (``/usr/share/perl/*/pod``),
not in a pip wheel; without it the builder raises a `UserError` naming the package.

- query: the question (a ``=head2`` heading ending in "?"; task "Retrieval");
- positive: its answer, the POD text up to the next heading, formatting codes resolved
  (``C<$|>`` -> ``$|``, ``L<text|perlfunc>`` -> ``text``), index entries (``X<...>``) dropped, code
  blocks kept, cut at `max_answer_chars` on a paragraph boundary;
- negatives: the answers of the same split closest to the question by BM25.

Split: by FAQ file (a file is a topic: data, files, regexes, ...), so a held-out file's questions
and answers are never trained on.

CLI: ``python -m embeddinggemma_jax.data.build --dataset perlfaq``
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from embeddinggemma_jax.data import building
from embeddinggemma_jax.errors import LocatedError, UserError

NAME = "perlfaq"
BUILDER_VERSION = 1
TASK = "Retrieval"
PACKAGE = "perl-doc"
# C<< $a <=> $b >>: n brackets open, n close, spaces inside.
_MULTI = [re.compile(rf"([A-Z])<{{{n}}}\s+(.*?)\s+>{{{n}}}", re.S) for n in (4, 3, 2)]
_SINGLE = re.compile(r"([A-Z])<([^<>]*)>")  # innermost first


def faq_dir() -> Path:
    """The directory of the installed Perl FAQ pods (Debian ``perl-doc``)."""
    for pod in sorted(glob.glob("/usr/share/perl/*/pod/perlfaq1.pod")):
        return Path(pod).parent
    raise UserError(
        f"perlfaq: the Perl FAQ is not installed; it comes in the Debian package {PACKAGE} "
        f"(apt-get install {PACKAGE})"
    )


def _code(letter: str, body: str) -> str:
    if letter in ("X", "Z"):
        return ""
    if letter == "E":
        return {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}.get(body, f"&{body};")
    if letter == "L":
        text, bar, _ = body.partition("|")  # L<text|target>, else the target: L<perlfunc/"open">
        return text if bar else body.replace('"', "")
    return body


def resolve(text: str, where: str) -> str:
    """A POD paragraph with its formatting codes resolved; LocatedError if one is left open."""
    for pattern in _MULTI:
        text = pattern.sub(lambda m: _code(m.group(1), m.group(2)), text)
    while True:
        new = _SINGLE.sub(lambda m: _code(m.group(1), m.group(2)), text)
        if new == text:
            break
        text = new
    match = re.search(r"\b[BCEFILSXZ]<", text)
    if match:
        raise LocatedError(
            f"unterminated formatting code {text[match.start() :][:20]!r}", where=where
        )
    return text


def read_pod(path: str | os.PathLike, max_answer_chars: int = 2000) -> list[tuple[str, str]]:
    """(question, answer) pairs of one FAQ pod: each ``=head2`` and the text under it."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[tuple[str, str]] = []
    question, paragraphs, para, para_line = None, [], [], 0

    def flush_paragraph():
        nonlocal para
        if para:
            block = "\n".join(para)
            verbatim = block[:1].isspace()
            paragraphs.append(
                block if verbatim else resolve(" ".join(block.split()), f"{path} line {para_line}")
            )
        para = []

    def flush_question():
        if question is None:
            return
        answer = ""
        for p in paragraphs:
            if answer and len(answer) + len(p) + 2 > max_answer_chars:
                break
            answer = f"{answer}\n\n{p}" if answer else p
        if answer.strip():
            out.append((question, answer.strip()))

    skipping = False  # inside =begin ... =end or =for blocks
    for i, line in enumerate(lines, 1):
        if line.startswith("="):
            flush_paragraph()
            command, _, rest = line.partition(" ")
            if command in ("=head1", "=head2", "=head3"):
                flush_question()
                question, paragraphs = None, []
                if command == "=head2":
                    question = " ".join(resolve(rest, f"{path} line {i}").split())
                    if not question:
                        raise LocatedError("=head2 without a question", where=f"{path} line {i}")
            elif command == "=begin":
                skipping = True
            elif command == "=end":
                skipping = False
            continue
        if skipping:
            continue
        if not line.strip():
            flush_paragraph()
        else:
            if not para:
                para_line = i
            para.append(line)
    flush_paragraph()
    flush_question()
    return out


def _records(pairs: list[dict], num_negatives: int, seed: int) -> tuple[list[dict], dict]:
    answers = [p["answer"] for p in pairs]
    negatives = building.text_negatives(
        [p["question"] for p in pairs],
        answers,
        [{i} for i in range(len(pairs))],
        num_negatives,
        seed,
    )
    records = [
        {
            "query": p["question"],
            "positive": p["answer"],
            "negatives": [answers[j] for j in negs],
            "title": p["file"],
            "task": TASK,
            "query_id": f"{p['file']}:{i}",
            "positive_id": f"{p['file']}:{i}",
        }
        for i, (p, negs) in enumerate(zip(pairs, negatives))
    ]
    return records, {"records": len(pairs), "files": sorted({p["file"] for p in pairs})}


def _retrieval(pairs: list[dict]) -> tuple[dict, dict, dict]:
    corpus = {f"a:{i}": (p["file"], p["answer"]) for i, p in enumerate(pairs)}
    queries = {f"q:{i}": p["question"] for i, p in enumerate(pairs)}
    return corpus, queries, {f"q:{i}": {f"a:{i}": 1} for i in range(len(pairs))}


def collect_pairs(root: Path, max_answer_chars: int = 2000) -> list[dict]:
    """The pairs {"file", "question", "answer"} of the FAQ pods under `root`, first one of a
    question kept."""
    pods = sorted(root.glob("perl*faq*.pod"))
    pods = [p for p in pods if p.stem != "perlfaq"]  # the index of the others
    if not pods:
        raise UserError(f"perlfaq: no perl*faq*.pod files under {root}")
    pairs, seen = [], set()
    for pod in pods:
        for question, answer in read_pod(pod, max_answer_chars):
            if question.endswith("?") and question not in seen:  # not "Perl Books"
                seen.add(question)
                pairs.append({"file": pod.stem, "question": question, "answer": answer})
    return pairs


DATASET = building.UnitDataset(
    NAME,
    BUILDER_VERSION,
    (__file__,),
    TASK,
    "task",
    unit=lambda p: p["file"],
    record_id=lambda p: p["question"],
    records=_records,
    retrieval=_retrieval,
    manifest={"source": PACKAGE},
)


def build_perlfaq(
    out_dir: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    max_answer_chars: int = 2000,
    force: bool = False,
    **splitting,
) -> building.DatasetPaths:
    """Builds (or returns the cached) Perl FAQ dataset; see the module docstring.

    Args:
      out_dir: output directory (default: ``<cache>/data/perlfaq``).
      root: directory of the ``perlfaq*.pod`` files (default: the installed perl-doc's).
      max_answer_chars: answers are cut to this length at a paragraph boundary.
      force: rebuild even if cached.
      splitting: `building.Splitting` (caps, negatives, held-out shares of whole FAQ files, seed).
    """
    root_path = faq_dir() if root is None else Path(root)
    return building.build_units(
        DATASET,
        out_dir,
        root_path,
        {"max_answer_chars": max_answer_chars},
        lambda: collect_pairs(root_path, max_answer_chars),
        force=force,
        **splitting,
    )
