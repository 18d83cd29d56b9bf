"""Every command line answers a user mistake with one line ``error: <where>: <what>`` and exit
status 2, no traceback, nothing written; ``--verbose`` / EMBEDDINGGEMMA_JAX_DEBUG=1 add the
traceback; programming errors still raise.

Each case runs the real ``python -m embeddinggemma_jax.X`` in a subprocess; every one must fail
before a model loads or anything compiles, so the cases are cheap and run a few at a time."""

from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, train_tiny_tokenizer

from embeddinggemma_jax import cli
from embeddinggemma_jax.errors import LocatedError, UserError

GOOD_PAIR = '{"query": "how to sort a list", "positive": "sorted(xs)", "negatives": ["len(xs)"]}'
GOOD_STS = '{"sentence1": "a cat", "sentence2": "a dog", "score": 1.0}'


def _inputs(root: Path) -> dict[str, Path]:
    """The files the cases point at: one problem each, on a known line."""
    files = {
        "pairs_bad_json.jsonl": f'{GOOD_PAIR}\n{{"query": "q", "positive": \n',
        "pairs_bad_record.jsonl": f'{GOOD_PAIR}\n\n{{"query": "q", "positiv": "p"}}\n',
        "texts_bad_json.jsonl": '{"text": "ok"}\n\n{"text": "unterminated}\n',
        "texts_bad_record.jsonl": '{"text": "ok"}\n{"text": ["not", "a", "string"]}\n',
        "texts.txt": "one\ntwo\n",
        "texts.csv": "text\none\n",
        "sts_bad_json/task.json": '{"type": "STS", "name": "sts-bad-json"}',
        "sts_bad_json/test.jsonl": f'{GOOD_STS}\n{{"sentence1": "a", \n',
        "sts_bad_record/task.json": '{"type": "STS", "name": "sts-bad-record"}',
        "sts_bad_record/test.jsonl": f'{GOOD_STS}\n{{"sentence1": "a", "sentence2": 3, "score": 1}}\n',
        "sts_missing_file/task.json": '{"type": "STS", "name": "sts-missing"}',
    }  # fmt: skip
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return {name.split("/")[0]: root / name.split("/")[0] for name in files}


# name -> (module, arguments, fragments the one error line must hold); {x} is a path under the
# case's temporary folder, {tok} the tiny tokenizer. Outputs go to {out}, which must not appear.
MAIN = "embeddinggemma_jax.main"
TINY = ["--config=configs/tiny.py", "--workdir={out}"]
DATA = [*TINY, "--config.tokenizer={tok}"]
EMBED = "embeddinggemma_jax.embed"
EMBED_ARGS = ["--model", "{tmp}/no-model", "--output", "{out}/e.npy"]
EVAL = "embeddinggemma_jax.evaluate"
EVAL_ARGS = ["--model", "{tmp}/no-model", "--output", "{out}/report.json"]
CASES = {
    # main (absl + ml_collections config flags)
    "main-missing-config": (MAIN, ["--config=configs/nope.py", "--workdir={out}"],
                            ["--config", "no such config file: configs/nope.py"]),
    "main-mistyped-key": (MAIN, [*TINY, "--config.data.global_batch_sise=4"],
                          ["--config.data.global_batch_sise: no such config key "
                           "(did you mean --config.data.global_batch_size?)"]),
    "main-bad-flag-value": (MAIN, [*TINY, "--config.num_steps=many"],
                            ["--config.num_steps: ", "'many'"]),
    "main-missing-data": (MAIN, [*DATA, "--config.train_data={tmp}/nope.jsonl"],
                          ["nope.jsonl", "no such file"]),
    "main-bad-json": (MAIN, [*DATA, "--config.train_data={pairs_bad_json.jsonl}"],
                      ["pairs_bad_json.jsonl line 2: invalid JSON"]),
    "main-bad-record": (MAIN, [*DATA, "--config.train_data={pairs_bad_record.jsonl}"],
                        ["pairs_bad_record.jsonl line 3: field 'positiv': unknown field"]),
    "embed-missing-file": (EMBED, [*EMBED_ARGS, "--input", "{tmp}/nope.txt"],
                           ["nope.txt: no such file"]),
    "embed-bad-json": (EMBED, [*EMBED_ARGS, "--input", "{texts_bad_json.jsonl}"],
                       ["texts_bad_json.jsonl line 3: invalid JSON"]),
    "embed-bad-record": (EMBED, [*EMBED_ARGS, "--input", "{texts_bad_record.jsonl}"],
                         ["texts_bad_record.jsonl line 2: field 'text' must be a string, got an array"]),
    "embed-bad-format": (EMBED, [*EMBED_ARGS, "--input", "{texts.csv}"],
                         ["texts.csv: cannot tell the format from the suffix '.csv'"]),
    "embed-bad-flag-value": (EMBED, [*EMBED_ARGS, "--input", "{texts.txt}", "--dim", "wide"],
                             ["--dim: invalid int value: 'wide'"]),
    "embed-bad-flag-range": (EMBED, [*EMBED_ARGS, "--input", "{texts.txt}", "--dim", "0"],
                             ["--dim must be >= 1"]),
    "embed-missing-flag": (EMBED, ["--input", "{texts.txt}", "--output", "{out}/e.npy"],
                           ["the following arguments are required: --model"]),
    # evaluate (argparse)
    "evaluate-unknown-task": (EVAL, [*EVAL_ARGS, "--tasks", "nope"], ["unknown task 'nope'"]),
    "evaluate-mistyped-task": (EVAL, [*EVAL_ARGS, "--tasks", "stdlib-code-serch"],
                               ["unknown task 'stdlib-code-serch'",
                                "did you mean stdlib-code-search?"]),
    "evaluate-missing-file": (EVAL, [*EVAL_ARGS, "--tasks", "{sts_missing_file}"],
                              ["sts_missing_file", "test.jsonl"]),
    "evaluate-bad-json": (EVAL, [*EVAL_ARGS, "--tasks", "{sts_bad_json}"],
                          ["sts_bad_json/test.jsonl line 2: invalid JSON"]),
    "evaluate-bad-record": (EVAL, [*EVAL_ARGS, "--tasks", "{sts_bad_record}"],
                            ["sts_bad_record/test.jsonl line 2: field 'sentence2'"]),
    "evaluate-bad-flag-value": (EVAL, [*EVAL_ARGS, "--tasks", "nope", "--dims", "768,x"],
                                ["--dims: expected comma-separated integers, got '768,x'"]),
}  # fmt: skip
# With the traceback asked for, the same one line still ends the output.
DEBUG_CASES = {
    "embed-verbose": ("embed-bad-json", ["--verbose"], {}),
    "evaluate-debug-env": ("evaluate-bad-json", [], {"EMBEDDINGGEMMA_JAX_DEBUG": "1"}),
}


def _fill(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def _run(module: str, args: list[str], tmp: Path, env: dict[str, str]):
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs every case (a few subprocesses at a time): name -> (CompletedProcess, out folder)."""
    root = tmp_path_factory.mktemp("cli-errors")
    corpus = "\n".join(inspect.getdoc(m) for m in (argparse, concurrent.futures, subprocess))
    tok = train_tiny_tokenizer(root / "tok", corpus)
    fill = {k: str(v) for k, v in _inputs(root).items()}
    fill.update(tmp=str(root), tok=str(tok.path))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("EMBEDDINGGEMMA_JAX_DEBUG", None)
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        todo = {name: (name, [], {}) for name in CASES} | DEBUG_CASES
        for name, (case, extra, extra_env) in todo.items():
            module, args, _ = CASES[case]
            out = root / "out" / name
            args = [_fill(a, {**fill, "out": str(out)}) for a in args] + extra
            jobs[name] = (pool.submit(_run, module, args, root, {**env, **extra_env}), out)
        return {name: (job.result(), out) for name, (job, out) in jobs.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_mistake_is_one_line_and_exit_2(results, name):
    proc, out = results[name]
    fragments = CASES[name][2]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0] == proc.stderr.splitlines()[-1], proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""
    assert not out.exists()  # nothing written: no workdir, no .npy, no report


@pytest.mark.parametrize("name", sorted(DEBUG_CASES))
def test_verbose_or_debug_env_shows_the_traceback(results, name):
    proc, out = results[name]
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "LocatedError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: ")
    assert not out.exists()


def test_programming_errors_still_raise(capsys):
    @cli.command
    def broken(argv=None):
        raise RuntimeError("a bug")

    @cli.command
    def mistaken(argv=None):
        raise LocatedError("invalid JSON", where="x.jsonl line 4")

    with pytest.raises(RuntimeError, match="a bug"):
        broken([])
    with pytest.raises(SystemExit) as e:
        mistaken([])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: x.jsonl line 4: invalid JSON\n"


def test_argument_parser_errors_name_the_flag():
    parser = cli.ArgumentParser(prog="p")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--mode", choices=("a", "b"))
    with pytest.raises(LocatedError) as e:
        parser.parse_args(["--dim", "x"])
    assert (e.value.where, e.value.reason) == ("--dim", "invalid int value: 'x'")
    with pytest.raises(LocatedError, match=r"^--mode: invalid choice: 'c'"):
        parser.parse_args(["--mode", "c"])
    with pytest.raises(UserError, match="unrecognized arguments: --dimm"):
        parser.parse_args(["--dimm", "3"])
    assert isinstance(parser, argparse.ArgumentParser) and parser.parse_args(["--verbose"]).verbose


def test_config_override_check_suggests_the_key():
    config = cli.load_config("configs/tiny.py")
    cli.check_override(config, "data.global_batch_size")
    cli.check_override(config, "data.datasets[0].path")
    with pytest.raises(LocatedError) as e:
        cli.check_override(config, "optimizer.learning_rte")
    assert str(e.value) == (
        "--config.optimizer.learning_rte: no such config key "
        "(did you mean --config.optimizer.learning_rate?)"
    )
    with pytest.raises(LocatedError, match=r"^--config\.zzz: no such config key$"):
        cli.check_override(config, "zzz")


def test_config_checks_before_absl_parses(capsys):
    """What `run_absl` answers for the main cases not run in a subprocess above."""
    with pytest.raises(LocatedError, match=r"^--config=configs/embeddinggemma_300m.py:nope: "):
        cli.load_config("configs/embeddinggemma_300m.py:nope")
    finetune = cli.load_config("configs/embeddinggemma_300m.py:finetune")
    with pytest.raises(LocatedError) as e:  # the README's old finetune command
        cli.check_override(finetune, "init.path")
    assert str(e.value).endswith("no such config key (did you mean --config.init_from?)")
    unknown = cli._absl_flag_error(
        Exception("Unknown command line flag 'wokdir'. Did you mean: workdir ?")
    )
    assert str(unknown) == "--wokdir: no such flag (did you mean --workdir?)"
    missing = cli._absl_flag_error(
        Exception("flag --workdir=None: Flag --workdir must have a value other than None.")
    )
    assert str(missing) == "--workdir: missing (a required flag)"
    # A config-dict flag (the quickstart's) applies overrides while it is defined.
    with pytest.raises(SystemExit) as exit_:
        cli.define_config_dict("cli_test_config", finetune, ["--cli_test_config.num_step=3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: --cli_test_config.num_step: no such config key "
        "(did you mean --cli_test_config.num_steps?)\n"
    )
