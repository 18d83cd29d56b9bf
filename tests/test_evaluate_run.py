"""Evaluating a whole training run: `--steps all` equals evaluating each step alone (one
compilation), `--watch` picks up a checkpoint written after it started and never reads a
half-written one, every path form works from another working directory, mistakes are one line."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import evalkit
import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from embeddinggemma_jax import checkpoint, cli
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.eval import RetrievalTask, checkpoints
from embeddinggemma_jax.evaluate import main
from embeddinggemma_jax.model import init_params

NUM_STEPS = 3


@pytest.fixture(scope="module")
def source(tmp_path_factory, cheap_compile):
    """A tiny training workdir with complete checkpoints at steps 1, 2, 3 (different weights)."""
    root = tmp_path_factory.mktemp("source")
    embedder = evalkit.tiny_embedder(root / "tok")
    workdir = root / "run"
    saver = checkpoint.Checkpointer(workdir, keep=NUM_STEPS, async_save=False)
    saver.copy_tokenizer(embedder.tokenizer.path)
    export_info = {
        "task": "contrastive",
        "model_config": dataclasses.asdict(embedder.config),
        "prompts": embedder.prompts,
        "tokenizer": {
            "file": checkpoint.TOKENIZER,
            "sha256": checkpoint.file_sha256(embedder.tokenizer.path),
        },
    }
    for step in range(1, NUM_STEPS + 1):
        state = SimpleNamespace(
            params=init_params(embedder.config, jax.random.key(step)),
            opt_state={"count": np.zeros((), np.int32)},
            rng=np.zeros(2, np.uint32),
        )
        config = {"num_steps": NUM_STEPS}
        saver.save(step, state, data_state=None, config=config, export_info=export_info)
    saver.close()
    funcs = dict(list(evalkit.stdlib_functions().items())[:24])
    task = RetrievalTask(
        name="mini-retrieval",
        corpus={i: (i.split(".")[0], t) for i, t in funcs.items()},
        queries={f"q-{i}": i.split(".")[-1].replace("_", " ") for i in funcs},
        qrels={f"q-{i}": {i: 1} for i in funcs},
    )
    return SimpleNamespace(workdir=workdir, task_dir=task.save(root / "task"), task=task)


def _copy_run(source, dest: Path, steps) -> Path:
    """A run directory holding the given steps of `source` (as Orbax leaves them)."""
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(source.workdir / checkpoint.TOKENIZER, dest / checkpoint.TOKENIZER)
    for step in steps:
        _land_step(source, dest, step)
    return dest


def _land_step(source, dest: Path, step: int) -> None:
    """Writes a step the way Orbax does: into a tmp folder, renamed once complete."""
    tmp = dest / "checkpoints" / f"{step}.orbax-checkpoint-tmp-1234"
    shutil.copytree(source.workdir / "checkpoints" / str(step), tmp, dirs_exist_ok=True)
    tmp.rename(dest / "checkpoints" / str(step))


def _assert_same_scores(row: dict, alone: dict) -> None:
    assert list(row["tasks"]) == list(alone["tasks"])
    for name, entry in alone["tasks"].items():
        assert list(row["tasks"][name]["results"]) == list(entry["results"])
        for dim, scores in entry["results"].items():
            got = row["tasks"][name]["results"][dim]
            assert got == pytest.approx(scores, abs=1e-6), (row["step"], name, dim)


def _tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every TFRecord event file in `folder`."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_steps_all_equals_each_step_alone(source, tmp_path, monkeypatch, capsys):
    _copy_run(source, tmp_path / "run", [1, 2, 3])
    monkeypatch.chdir(tmp_path)
    common = ["--tasks", str(source.task_dir), "--dims", "40,12", "--batch-size", "32"]
    result = main(["--model", "run/", "--steps", "all", *common])
    printed = capsys.readouterr().out
    rows = result["rows"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [line.split()[0] for line in printed.splitlines()[2:5]] == ["1", "2", "3"]
    out = tmp_path / "run" / "eval_offline.json"
    assert json.loads(out.read_text())["rows"] == rows
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in rows:
        alone = main(["--model", str(tmp_path / "run" / "checkpoints" / str(row["step"])), *common])
        _assert_same_scores(row, alone)
    main_scores = {r["tasks"]["mini-retrieval"]["results"]["40"]["main_score"] for r in rows}
    assert len(main_scores) == 3  # the steps' different weights were really swapped in
    tags = _tensorboard_scalars(tmp_path / "run" / "tensorboard")
    for dim in ("40", "12"):
        got = tags[f"eval_offline/mini-retrieval/ndcg_at_10_{dim}"]
        want = {r["step"]: r["tasks"]["mini-retrieval"]["results"][dim]["main_score"] for r in rows}
        assert got == pytest.approx(want, abs=1e-6)


def test_later_steps_swap_parameters_without_compiling(source, tmp_path):
    run = _copy_run(source, tmp_path / "run", [1, 2])
    embedders = checkpoints.StepEmbedders()
    texts = list(source.task.queries.values())[:5]
    first = embedders.load(run / "checkpoints" / "1")
    a = first.encode(texts, batch_size=8)
    compiled = first._forward._cache_size() + first._forward_packed._cache_size()
    second = embedders.load(run / "checkpoints" / "2")
    b = second.encode(texts, batch_size=8)
    assert second is first
    assert second._forward._cache_size() + second._forward_packed._cache_size() == compiled
    assert not np.allclose(a, b)


def test_every_path_form_selects_the_same_steps(source, tmp_path, monkeypatch):
    _copy_run(source, tmp_path / "home" / "run", [1, 2, 3])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    steps = [s for s, _ in checkpoints.select_steps("../home/run", "all")]
    assert steps == [1, 2, 3]
    for form in ("~/run", "../home/run/", "../home/run/checkpoints", "~/run/checkpoints/"):
        assert [s for s, _ in checkpoints.select_steps(form, "all")] == steps, form
        assert [s for s, _ in checkpoints.select_steps(form, "latest")] == [3], form
        assert [s for s, _ in checkpoints.select_steps(form, "3,1")] == [1, 3], form
    assert [s for s, _ in checkpoints.select_steps("~/run/checkpoints/2/", "all")] == [2]
    assert checkpoints.run_dir("~/run/checkpoints/2") == tmp_path / "home" / "run"
    with pytest.raises(LocatedError, match=r"~/run: no step 7 in .* \(complete steps: 1, 2, 3\)"):
        checkpoints.select_steps("~/run", "7")


def test_watch_picks_up_a_checkpoint_written_after_it_started(source, tmp_path, monkeypatch):
    run = _copy_run(source, tmp_path / "run", [1, 2])
    # Step 3 is being written: Orbax's temporary folder, half there. It must never be read.
    partial = run / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
    shutil.copytree(source.workdir / "checkpoints" / "3" / "model", partial / "model")
    (partial / "params").mkdir()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "watch" / "report.json"
    args = ["--model", "run", "--watch", "--poll-seconds", "0.2", "--tasks",
            str(source.task_dir), "--dims", "40", "--output", str(out)]  # fmt: skip
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(main(args)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        out.is_file() and len(json.loads(out.read_text())["rows"]) == 2
    ):
        time.sleep(0.1)
    assert [r["step"] for r in json.loads(out.read_text())["rows"]] == [1, 2]
    assert thread.is_alive()  # still watching: the run's last step (3) is not there yet
    _land_step(source, run, 3)  # completes the tmp folder and renames it
    thread.join(timeout=120)
    assert not thread.is_alive()  # stopped by itself at num_steps
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows == result["rows"]
    alone = main(["--model", str(run / "checkpoints" / "3"), "--tasks", str(source.task_dir),
                  "--dims", "40"])  # fmt: skip
    _assert_same_scores(rows[2], alone)
    # A second --watch on the finished run appends nothing and evaluates nothing.
    again = main(args)
    assert [r["step"] for r in again["rows"]] == [1, 2, 3]
    assert json.loads(out.read_text())["rows"] == rows


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "7"], r"error: run: no step 7 in .*checkpoints \(complete steps: 1, 2\)"),
        (["--steps", "first"], r"error: --steps: expected all, latest, best or comma-separated"),
        (["--tasks", "no-such-task", "--steps", "all"], r"error: unknown task 'no-such-task'"),
    ],
)
def test_mistakes_are_one_line(source, tmp_path, monkeypatch, capsys, extra, message):
    _copy_run(source, tmp_path / "run", [1, 2])
    monkeypatch.chdir(tmp_path)
    args = ["--model", "run", "--tasks", str(source.task_dir), *extra]
    with pytest.raises(SystemExit) as exit_info:
        cli.command(main)(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "eval_offline.json").exists()


def test_missing_run_folder_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.command(main)(["--model", "no-run", "--steps", "all", "--tasks", "humanize-bitext"])
    err = capsys.readouterr().err
    assert err.startswith("error: no-run: no such folder") and "Traceback" not in err
    assert not (tmp_path / "no-run").exists()
