"""Embed a file of texts into a .npy matrix.

    python -m embeddinggemma_jax.embed --model google/embeddinggemma-300m \\
        --input queries.txt --prompt-name query --dim 256 --output queries.npy
    embeddinggemma-embed --model ./my-model --input docs.jsonl --prompt-name document \\
        --output docs.npy --ids-output docs.ids

Row i of the output is the i-th text of the input (see `--help` for how .txt and .jsonl files are
read). Every problem with the input is reported with its file and line before the model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddinggemma_jax import cli, readers
from embeddinggemma_jax.cache import atomic_path, compilation_cache_dir
from embeddinggemma_jax.errors import LocatedError, UserError

FORMATS = ("auto", "txt", "jsonl")
_SUFFIXES = {".txt": "txt", ".jsonl": "jsonl"}

_DESCRIPTION = """\
Embed every text of a file with an EmbeddingGemma model and save a float32 .npy matrix
[N, dim] of L2-normalised embeddings; row i belongs to the i-th text of the input.

Input formats (chosen by the file's suffix, or by --format):
  .txt    one text per line, as sentence-transformers users expect. Every line is a text,
          blank lines included (a blank line is embedded as an empty text: prompt plus special
          tokens), so row i is always line i+1. A final newline does not add a text. Line ends
          are \\n or \\r\\n; other characters (tabs, U+2028, ...) stay in the text.
  .jsonl  one JSON object per line holding the text under --text-field (default "text"). An
          optional title under --title-field (default "title"; string or null) is used with
          --prompt-name document: the text then gets the prompt "title: {title} | text: " (a
          missing or null title gives "title: none | text: "). Blank lines are skipped; error
          messages and --ids-output give physical line numbers.
Files are read as UTF-8 (a leading byte-order mark is ignored).

Prompts: EmbeddingGemma was trained with a task prompt in front of each text. Use
--prompt-name query for search queries and --prompt-name document for the texts searched
(the checkpoint's table also has STS, Clustering, Classification, ...), or --prompt for a
literal prefix. Without either, texts are embedded as they are.
"""


# A problem with the input file, reported with its path and line: the package's located error,
# under the name this API always had.
InputError = LocatedError


@dataclass(frozen=True)
class Records:
    """Texts read from a file, with optional titles and the ids of their rows."""

    texts: list[str]
    titles: list[str | None] | None  # None: the input carries no titles
    ids: list[str]  # one per text: the record's id field, or its 1-based line number


def read_txt(path: str | os.PathLike) -> Records:
    """One text per line; every line is a text (blank lines are empty texts)."""
    texts = [line for _, line in readers.read_lines(path)]
    return Records(texts=texts, titles=None, ids=[str(i) for i in range(1, len(texts) + 1)])


def read_jsonl(
    path: str | os.PathLike,
    text_field: str = "text",
    title_field: str | None = "title",
    id_field: str | None = "id",
) -> Records:
    """One JSON object per line with a string under `text_field`.

    `title_field` (optional per record; str or null) and `id_field` (str or int; all records or
    none) are read when given. Blank lines are skipped.
    """
    texts: list[str] = []
    titles: list[str | None] = []
    has_title = False
    ids: list[str] = []
    first_has_id: bool | None = None
    for where, record in readers.read_jsonl(path, objects=False):
        if not isinstance(record, dict):
            raise InputError(
                f"expected a JSON object with a {text_field!r} field, "
                f"got {readers.json_type(record)}",
                where=where,
            )
        if text_field not in record:
            fields = ", ".join(map(repr, record)) or "none"
            raise InputError(f"no {text_field!r} field (fields: {fields})", where=where)
        text = record[text_field]
        if not isinstance(text, str):
            raise InputError(
                f"field {text_field!r} must be a string, got {readers.json_type(text)}",
                where=where,
            )
        texts.append(text)
        title = record.get(title_field) if title_field else None
        if title is not None and not isinstance(title, str):
            raise InputError(
                f"field {title_field!r} must be a string or null, got {readers.json_type(title)}",
                where=where,
            )
        has_title |= bool(title_field) and title_field in record
        titles.append(title)
        record_id = record.get(id_field) if id_field else None
        if record_id is not None and (
            isinstance(record_id, bool) or not isinstance(record_id, (str, int))
        ):
            raise InputError(
                f"field {id_field!r} must be a string or integer, got "
                f"{readers.json_type(record_id)}",
                where=where,
            )
        if first_has_id is None:
            first_has_id = record_id is not None
        elif (record_id is not None) != first_has_id:
            raise InputError(
                f"{'has' if record_id is not None else 'lacks'} an {id_field!r} field "
                f"but the first record {'lacks' if record_id is not None else 'has'} one; give "
                "every record an id or none (then ids are line numbers)",
                where=where,
            )
        ids.append(where.rpartition(" line ")[2] if record_id is None else str(record_id))
    return Records(texts=texts, titles=titles if has_title else None, ids=ids)


def read_records(
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    text_field: str = "text",
    title_field: str | None = "title",
    id_field: str | None = "id",
) -> Records:
    """Reads a .txt or .jsonl input (see the module's --help for the rules)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise InputError(
                f"cannot tell the format from the suffix {path.suffix!r}; use a .txt "
                "(one text per line) or .jsonl file, or pass --format txt|jsonl",
                where=str(path),
            )
    readers.check_file(path)
    if fmt == "txt":
        return read_txt(path)
    return read_jsonl(path, text_field, title_field or None, id_field or None)


def save_npy(path: Path, array: np.ndarray) -> None:
    """Writes through a temporary file so an interrupted run never leaves a truncated .npy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m embeddinggemma_jax.embed",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        help="sentence-transformers/Hugging Face folder, hub id, or Orbax checkpoint directory",
    )
    parser.add_argument("--input", required=True, help="a .txt or .jsonl file of texts")
    parser.add_argument("--output", required=True, help="the .npy file to write: [N, dim] float32")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prompt-name",
        default=None,
        help="prompt from the model's table: query, document, STS, Clustering, ... (default: none)",
    )
    prompt.add_argument("--prompt", default=None, help="a literal prompt to prepend to every text")
    parser.add_argument(
        "--dim", type=int, default=None, help="Matryoshka dimension (e.g. 512, 256, 128)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="compute dtype: float32 (default) or bfloat16 (float16 is refused)",
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=2048,
        help="tokens per text including BOS/EOS; longer texts are truncated (default 2048)",
    )
    parser.add_argument("--format", choices=FORMATS, default="auto", help="input format")
    parser.add_argument("--text-field", default="text", help='JSONL field of the text ("text")')
    parser.add_argument(
        "--title-field",
        default="title",
        help='JSONL field of the document title ("title"; "" to ignore titles)',
    )
    parser.add_argument(
        "--id-field", default="id", help='JSONL field of the record id for --ids-output ("id")'
    )
    parser.add_argument(
        "--ids-output",
        default=None,
        help="also write one id per line, line i for row i: the JSONL id field if the records "
        "have one, else the 1-based line number of the text in the input",
    )
    parser.add_argument(
        "--compilation-cache",
        default=None,
        help="folder for JAX's persistent compilation cache, so later runs skip compiling the "
        "shapes earlier runs compiled (default: $JAX_COMPILATION_CACHE_DIR if set, else "
        f"{compilation_cache_dir()}); '' to turn it off",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


@cli.command
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # Everything that can be checked without the model, before loading it.
    output = Path(args.output)
    if output.suffix != ".npy":
        raise UserError(f"--output must end in .npy, got {str(output)!r}")
    for flag, value, least in (
        ("--dim", args.dim, 1),
        ("--batch-size", args.batch_size, 1),
        ("--max-length", args.max_length, 2),
    ):
        if value is not None and value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    records = read_records(
        args.input,
        args.format,
        text_field=args.text_field,
        title_field=args.title_field,
        id_field=args.id_field,
    )
    from embeddinggemma_jax.model import check_dtype  # the first import of jax

    try:
        dtype = check_dtype(args.dtype)
    except ValueError as e:
        raise LocatedError(str(e), where="--dtype") from e
    if records.titles is not None and args.prompt_name != "document":
        raise UserError(
            f"{args.input}: records have a {args.title_field!r} field, which only applies to "
            f"documents; pass --prompt-name document, or --title-field '' to ignore titles"
        )
    if args.ids_output:
        for i, record_id in enumerate(records.ids):
            if "\n" in record_id or "\r" in record_id:
                raise UserError(
                    f"{args.input}: id {record_id!r} of text {i + 1} contains a line break"
                )

    import jax

    from embeddinggemma_jax.embedder import Embedder
    from embeddinggemma_jax.text.prompts import resolve_prompt

    cache = compilation_cache_dir() if args.compilation_cache is None else args.compilation_cache
    if cache:
        # Each (batch, length) shape compiles the whole model: seconds per shape on a CPU.
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache))
    start = time.perf_counter()
    try:
        embedder = Embedder.from_pretrained(args.model, dtype=dtype, max_length=args.max_length)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"cannot load --model {args.model!r}: {e}") from e
    try:
        resolve_prompt(embedder.prompts, prompt_name=args.prompt_name, prompt=args.prompt)
    except KeyError as e:
        raise UserError(e.args[0]) from e
    if args.dim is not None and args.dim > embedder.config.output_dim:
        raise UserError(
            f"--dim {args.dim} exceeds the model's output dimension {embedder.config.output_dim}"
        )
    loaded = time.perf_counter()

    progress = not args.no_progress
    kw = dict(dim=args.dim, batch_size=args.batch_size, show_progress=progress)
    if records.titles is not None:
        embeddings = embedder.encode_document(records.texts, titles=records.titles, **kw)
    else:
        embeddings = embedder.encode(
            records.texts, prompt_name=args.prompt_name, prompt=args.prompt, **kw
        )
    done = time.perf_counter()

    embeddings = np.asarray(embeddings, np.float32)
    save_npy(output, embeddings)
    if args.ids_output:
        ids_path = Path(args.ids_output)
        ids_path.parent.mkdir(parents=True, exist_ok=True)
        ids_path.write_text("".join(f"{i}\n" for i in records.ids), encoding="utf-8")
    n = len(records.texts)
    rate = n / (done - loaded) if done > loaded else float("inf")
    print(
        f"wrote {output}: {n} x {embeddings.shape[1]} float32 "
        f"(model loaded in {loaded - start:.1f}s, encoded in {done - loaded:.1f}s, "
        f"{rate:.1f} texts/s incl. compilation)",
        file=sys.stderr,
    )
    return 0


def run() -> None:
    """Console-script entry point (`embeddinggemma-embed`)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
