"""The commands the docs print run: every ``python -m embeddinggemma_jax.X ...`` (or console
script) in README.md and in the docstrings of configs/*.py names a module that imports and answers
``--help`` with status 0, every ``--flag`` it passes is one that module's ``--help`` lists, its
``--config=FILE[:variant]`` loads, and every ``--config.KEY=...`` override names an existing key.

Commands are found, not listed: a new CLI or config documented later is checked the same way."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO

from embeddinggemma_jax import cli

ROOT = Path(REPO)
PREFIX = "embeddinggemma_jax"


def _scripts() -> dict[str, str]:
    """Console script name -> module, from pyproject.toml."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    return {name: target.split(":")[0] for name, target in scripts.items()}


def _snippets(markdown: str) -> list[str]:
    """Fenced code blocks and inline code spans of a Markdown text."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", markdown, flags=re.S | re.M)
    return fenced + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", rest)]


def _commands(text: str) -> list[list[str]]:
    """Each command in a snippet as argv (module first); backslash continuations joined,
    optional ``[...]`` brackets and ``...`` placeholders dropped."""
    text = re.sub(r"\\\n\s*", " ", text).replace("\n", " \n")
    starts = ["python -m " + PREFIX, *(rf"(?<![\w-]){re.escape(s)}" for s in _scripts())]
    out = []
    for match in re.finditer(rf"(?:{'|'.join(starts)})[\w.]*[^\n#`]*", text):
        words = shlex.split(match.group(0).replace("python -m ", "", 1))
        module = _scripts().get(words[0], words[0])
        args = [w.strip("[]") for w in words[1:] if w.strip("[]") and w != "..."]
        out.append([module, *args])
    return out


def _documented() -> list[tuple[str, list[str]]]:
    """(where, argv) of every documented command."""
    sources = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    for path in sorted((ROOT / "configs").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if doc:
            sources[f"configs/{path.name}"] = doc
    found = []
    for where, text in sources.items():
        snippets = _snippets(text) if where.endswith(".md") else [text]
        for snippet in snippets:
            found += [(where, argv) for argv in _commands(snippet)]
    return found


COMMANDS = _documented()


def _id(case) -> str:
    where, argv = case
    return f"{where}: {' '.join(argv)[:90]}"


def test_the_docs_have_commands():
    modules = {argv[0] for _, argv in COMMANDS}
    assert {f"{PREFIX}.main", f"{PREFIX}.embed", f"{PREFIX}.evaluate"} <= modules, modules
    assert any(where.startswith("configs/") for where, _ in COMMANDS)


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    """module -> its --help output, each module run once."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def run(module):
        cmd = [sys.executable, "-m", module, "--help"]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    modules = sorted({argv[0] for _, argv in COMMANDS})
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        procs = dict(zip(modules, pool.map(run, modules)))
    for module, proc in procs.items():
        assert proc.returncode == 0, f"python -m {module} --help: {proc.stderr[-2000:]}"
    return {module: proc.stdout + proc.stderr for module, proc in procs.items()}


def _config_for(module: str, args: list[str]):
    """The config a command's --config.KEY overrides apply to: its --config=FILE[:variant], else
    (a module with a built-in config dict, e.g. the quickstart) configs/<module>.py."""
    specs = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    if specs:
        return cli.load_config(specs[-1])
    default = ROOT / "configs" / f"{module.rsplit('.', 1)[-1]}.py"
    assert default.is_file(), f"{module}: --config.KEY overrides, but no --config file to check"
    return cli.load_config(str(default.relative_to(ROOT)))


@pytest.mark.parametrize("case", COMMANDS, ids=_id)
def test_documented_command(case, help_texts):
    where, (module, *args) = case
    helptext = help_texts[module]
    overrides = [a for a in args if a.startswith("--config.")]
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in overrides and not flag.startswith("--config."):
            assert re.search(rf"{re.escape(flag)}\b", helptext), f"{where}: {module} has no {flag}"
    if overrides or any(a.startswith("--config=") for a in args):
        config = _config_for(module, args)
        for arg in overrides:
            cli.check_override(config, arg[len("--config.") :].split("=", 1)[0])


def test_extraction_rules():
    doc = """run it:

```bash
python -m embeddinggemma_jax.main --config=configs/x.py:v \\
    --workdir=w --config.a.b=1 [--config.c=PATH] ...  # comment
embeddinggemma-embed --model m --input 'a b.txt'
```
and `python -m embeddinggemma_jax.evaluate --model M
--tasks t` inline."""
    found = [c for s in _snippets(doc) for c in _commands(s)]
    assert found == [
        [f"{PREFIX}.main", "--config=configs/x.py:v", "--workdir=w", "--config.a.b=1",
         "--config.c=PATH"],
        [f"{PREFIX}.embed", "--model", "m", "--input", "a b.txt"],
        [f"{PREFIX}.evaluate", "--model", "M", "--tasks", "t"],
    ]  # fmt: skip
