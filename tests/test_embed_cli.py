"""The embed CLI end to end on a tiny random model saved as a sentence-transformers folder: its .npy
equals Embedder.encode on the same texts, and bad input is reported with file and line before the
model loads."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import random_params, train_tiny_tokenizer

from embeddinggemma_jax import embed
from embeddinggemma_jax.embedder import Embedder
from embeddinggemma_jax.model import GLOBAL, LOCAL, ModelConfig, param_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(in-memory Embedder, its saved sentence-transformers folder): random weights, a small
    SentencePiece model trained on standard-library docstrings with Gemma's special ids."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = "\n".join(inspect.getdoc(m) for m in (argparse, json, textwrap, subprocess, inspect))
    tok = train_tiny_tokenizer(root, corpus)
    # Two layers (one local, one global) keep compilation short; random values everywhere, norm
    # scales included (NumPy, to skip tracing an initialiser).
    cfg = ModelConfig.tiny(vocab_size=tok.vocab_size, num_layers=2, layer_types=(LOCAL, GLOBAL))
    params = random_params(param_shapes(cfg), 0.1, seed=7)
    embedder = Embedder(cfg, params, tok, max_length=64)
    return embedder, embedder.save_pretrained(root / "model")


def _run(*args) -> int:
    # In-process runs leave JAX's global compilation-cache setting alone.
    return embed.main([str(a) for a in args] + ["--compilation-cache", ""])


TXT_TEXTS = [
    "how do I parse command line arguments",
    "",  # a blank line is an empty text
    "  indented, with a\ttab",
    "text with a line separator\u2028inside stays one text",
    "windows line end",
    inspect.getdoc(argparse),  # longer than max_length (newlines become spaces when written)
]


def _write_txt(path, texts, newline="\n"):
    texts = [t.replace("\n", " ") for t in texts]
    body = newline.join(texts) + newline
    path.write_bytes(body.encode("utf-8"))
    return texts


def test_txt_output_equals_encode(tiny, tmp_path):
    embedder, folder = tiny
    texts = _write_txt(tmp_path / "in.txt", TXT_TEXTS, newline="\r\n")
    assert len(embedder.tokenizer.encode([texts[-1]])[0]) > embedder.max_length  # truncated
    out, ids = tmp_path / "out" / "q.npy", tmp_path / "out" / "q.ids"
    args = ["--model", folder, "--input", tmp_path / "in.txt", "--output", out]
    assert _run(*args, "--prompt-name", "query", "--dim", 24, "--batch-size", 4,
                "--ids-output", ids, "--no-progress") == 0  # fmt: skip
    got = np.load(out)
    want = embedder.encode(texts, prompt_name="query", dim=24, batch_size=4)
    assert got.dtype == np.float32 and got.shape == (len(texts), 24)
    np.testing.assert_array_equal(got, want)
    assert ids.read_text().splitlines() == [str(i) for i in range(1, len(texts) + 1)]


def test_jsonl_titles_ids_and_fields(tiny, tmp_path):
    embedder, folder = tiny
    records = [
        {"id": "doc-a", "body": "Return a list of the words in the string.", "title": "split"},
        {"id": 7, "body": "Return a copy of the string with leading whitespace removed."},
        {"id": "doc-c", "body": "", "title": None},
        {"id": "doc-d", "body": inspect.getdoc(json), "title": "json", "extra": [1, 2]},
    ]
    lines = [json.dumps(r) for r in records]
    (tmp_path / "in.jsonl").write_text("\n".join([lines[0], "", *lines[1:]]) + "\n\n")
    out, ids = tmp_path / "d.npy", tmp_path / "d.ids"
    assert _run("--model", folder, "--input", tmp_path / "in.jsonl", "--output", out,
                "--prompt-name", "document", "--text-field", "body", "--ids-output", ids,
                "--batch-size", 4, "--no-progress") == 0  # fmt: skip
    want = embedder.encode_document(
        [r["body"] for r in records], titles=[r.get("title") for r in records], batch_size=4
    )
    np.testing.assert_array_equal(np.load(out), want)
    assert ids.read_text().splitlines() == ["doc-a", "7", "doc-c", "doc-d"]

    # Without ids the rows are identified by their physical line numbers (blank line skipped);
    # --title-field '' ignores titles, so any prompt (here a literal one) may be used.
    plain = [{"text": r["body"], "title": r.get("title")} for r in records]
    (tmp_path / "p.jsonl").write_text(
        "\n".join([json.dumps(plain[0]), " ", *map(json.dumps, plain[1:])])
    )
    assert _run("--model", folder, "--input", tmp_path / "p.jsonl", "--output", out,
                "--prompt", "task: code | query: ", "--title-field", "", "--ids-output", ids,
                "--batch-size", 4, "--no-progress") == 0  # fmt: skip
    want = embedder.encode(
        [r["body"] for r in records], prompt="task: code | query: ", batch_size=4
    )
    np.testing.assert_array_equal(np.load(out), want)
    assert ids.read_text().splitlines() == ["1", "3", "4", "5"]


def test_empty_input_gives_empty_matrix(tiny, tmp_path):
    _, folder = tiny
    (tmp_path / "empty.txt").write_text("")
    assert _run("--model", folder, "--input", tmp_path / "empty.txt", "--output",
                tmp_path / "e.npy", "--dim", 12, "--no-progress") == 0  # fmt: skip
    got = np.load(tmp_path / "e.npy")
    assert got.shape == (0, 12) and got.dtype == np.float32


def test_read_txt_line_rules(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffa\r\n\r\nb\u2028c\x0cd\n\n".encode())
    assert embed.read_txt(path).texts == ["a", "", "b\u2028c\x0cd", ""]
    path.write_bytes(b"only line")
    assert embed.read_txt(path).texts == ["only line"]


BAD_INPUTS = [
    # (file name, contents, fragment of the message), the problem on line 3
    ("a.jsonl", '{"text": "ok"}\n\n{"text": "unterminated}\n', " line 3: invalid JSON"),
    ("a.jsonl", '{"text": "ok"}\n\n["text"]\n', " line 3: expected a JSON object with a 'text' field"),
    ("a.jsonl", '{"text": "ok"}\n\n{"body": "x", "n": 1}\n', " line 3: no 'text' field (fields: 'body', 'n')"),
    ("a.jsonl", '{"text": "ok"}\n\n{"text": 12}\n', " line 3: field 'text' must be a string, got a number"),
    ("a.jsonl", '{"text": "ok"}\n\n{"text": null}\n', " line 3: field 'text' must be a string, got null"),
    ("a.jsonl", '{"text": "ok"}\n\n{"text": "x", "title": ["t"]}\n',
     " line 3: field 'title' must be a string or null, got an array"),
    ("a.jsonl", '{"text": "ok", "id": 1}\n\n{"text": "x"}\n', " line 3: lacks an 'id' field"),
    ("a.jsonl", '{"text": "ok", "id": 1}\n\n{"text": "x", "id": 1.5}\n',
     " line 3: field 'id' must be a string or integer, got a number"),
    ("a.txt", b"fine\nfine\nbad \xff byte\n", " line 3: not valid UTF-8"),
    ("a.csv", "text\n", "cannot tell the format from the suffix '.csv'"),
]  # fmt: skip


@pytest.mark.parametrize("name,contents,message", BAD_INPUTS)
def test_bad_input_named_by_file_and_line_before_loading(tmp_path, capsys, name, contents, message):
    path = tmp_path / name
    path.write_bytes(contents if isinstance(contents, bytes) else contents.encode())
    # The model does not exist: the input error must come first.
    with pytest.raises(SystemExit) as e:
        _run("--model", tmp_path / "no-model", "--input", path, "--output", tmp_path / "o.npy")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prompt-name", "query"], "only applies to documents; pass --prompt-name document"),
        (["--dim", "0"], "--dim must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--dtype", "float16"], "float16 is not supported"),
        (["--output", "x.np"], "--output must end in .npy"),
        (["--prompt", "p", "--prompt-name", "query"], "not allowed with argument"),
        (["--ids-output", "i.txt", "--prompt-name", "document"], "contains a line break"),
    ],
)
def test_bad_options_before_loading(tmp_path, capsys, extra, message):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "t", "title": "a", "id": "x\\ny"}\n')
    with pytest.raises(SystemExit) as e:
        _run(
            "--model",
            tmp_path / "no-model",
            "--input",
            path,
            "--output",
            tmp_path / "o.npy",
            *extra,
        )
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prompt-name", "nope"], "unknown prompt_name 'nope'; available prompt names:"),
        (["--dim", "41"], "--dim 41 exceeds the model's output dimension 40"),
    ],
)
def test_bad_options_against_the_model(tiny, tmp_path, capsys, extra, message):
    (tmp_path / "in.txt").write_text("a\n")
    with pytest.raises(SystemExit) as e:
        _run(
            "--model",
            tiny[1],
            "--input",
            tmp_path / "in.txt",
            "--output",
            tmp_path / "o.npy",
            *extra,
        )
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("a\n")
    with pytest.raises(SystemExit):
        _run(
            "--model",
            tmp_path / "no-model",
            "--input",
            tmp_path / "in.txt",
            "--output",
            tmp_path / "o.npy",
        )
    assert "cannot load --model" in capsys.readouterr().err


def test_help_documents_the_line_rules(capsys):
    with pytest.raises(SystemExit) as e:
        _run("--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "one text per line" in out and "blank line is embedded as an empty text" in out


def test_python_dash_m_with_progress_bar(tiny, tmp_path):
    embedder, folder = tiny
    texts = ["first text", "second text", "third"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    out, cache = tmp_path / "o.npy", tmp_path / "xla-cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "embeddinggemma_jax.embed", "--model", str(folder),
         "--input", str(tmp_path / "in.txt"), "--output", str(out), "--prompt-name", "query",
         "--compilation-cache", str(cache)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(cache.iterdir())  # compiled executables were cached for the next run
    assert "3/3" in proc.stderr and f"wrote {out}: 3 x 40 float32" in proc.stderr
    np.testing.assert_allclose(
        np.load(out), embedder.encode(texts, prompt_name="query"), rtol=0, atol=1e-6
    )
