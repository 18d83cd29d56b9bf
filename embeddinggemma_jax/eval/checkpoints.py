"""Evaluating a training run's checkpoints: every step, chosen steps, or each new step as the run
writes it.

    for row in evaluate_steps("runs/quickstart", ["stdlib-code-search"], steps="all"):
        print(row["step"], row["tasks"]["stdlib-code-search"]["results"]["768"]["main_score"])

Each row is `eval.runner.evaluate_embedder`'s report for one step, plus ``"step"`` and
``"checkpoint"``. The first step builds (and compiles) an `Embedder`; later steps of the same
model shape, tokenizer and prompts only swap its parameters, so nothing compiles again.

Only complete checkpoints are read: Orbax writes a step into ``<step>.orbax-checkpoint-tmp-*``
and renames it when it is complete, and such a folder is never listed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.errors import LocatedError, UserError
from embeddinggemma_jax.eval.registry import get_task
from embeddinggemma_jax.eval.runner import evaluate_embedder
from embeddinggemma_jax.eval.tasks import Task

__all__ = ["StepEmbedders", "complete_steps", "evaluate_steps", "run_dir", "select_steps"]


def complete_steps(path: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, step folder) of every complete checkpoint, oldest first (`checkpoint.complete_steps`;
    a missing folder is a `checkpoint.CheckpointError`)."""
    if not checkpoint.as_path(path).is_dir():
        checkpoint.resolve_step_dir(path)  # raises, naming the path as given
    return checkpoint.complete_steps(path)


def run_dir(path: str | os.PathLike):
    """The run directory of a run dir, its checkpoints/ folder or a step folder."""
    path = checkpoint.as_path(path)
    if path.name.isdigit() and (path / "params").is_dir():
        path = path.parent
    if path.name == checkpoint.CHECKPOINTS:
        path = path.parent
    return path


def select_steps(path: str | os.PathLike, steps: str = "all") -> list[tuple[int, Path]]:
    """The checkpoints `steps` names: "all", "latest", "best" (by the eval metric the run
    tracked) or comma-separated step numbers. A step that is not there is a
    `checkpoint.CheckpointError` naming the steps that are."""
    available = complete_steps(path)
    if not available:
        checkpoint.resolve_step_dir(path)  # raises the reason: nothing complete, or being written
    spec = steps.strip()
    if spec == "all":
        return available
    if spec == "latest":
        return available[-1:]
    if spec == "best":
        best = checkpoint.resolve_step_dir(path, best=True)
        return [(int(best.name), best)]
    by_step = dict(available)
    wanted = []
    for part in (p.strip() for p in spec.split(",")):
        if not part.isdigit():
            raise LocatedError(
                f"expected all, latest, best or comma-separated step numbers, got {part!r}",
                where="--steps",
            )
        wanted.append(int(part))
        checkpoint.resolve_step_dir(path, step=wanted[-1])  # raises for a step not there
    return [(s, by_step[s]) for s in sorted(set(wanted))]


def final_step(step_dir) -> int | None:
    """The run's last step (`num_steps` of the config saved with the checkpoint), if recorded."""
    config = checkpoint._read_item(step_dir, "config")
    value = config.get("num_steps") if isinstance(config, dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None


class StepEmbedders:
    """`Embedder`s for a run's steps, built once per model: a step with the same model config,
    tokenizer and prompts as the previous one only swaps the parameters in (one compilation for
    the whole run).

    Args:
      **embedder_kwargs: passed to `Embedder.from_pretrained` (dtype, max_length, ...).
    """

    def __init__(self, **embedder_kwargs: Any):
        self.embedder_kwargs = embedder_kwargs
        self.embedder = None
        self._model_key: str | None = None

    def load(self, step_dir):
        import jax

        from embeddinggemma_jax.embedder import Embedder

        step_dir, info = checkpoint.load_model_info(step_dir)
        key = json.dumps({k: info.get(k) for k in ("model_config", "tokenizer", "prompts")})
        if self.embedder is None or key != self._model_key:
            self.embedder = Embedder.from_pretrained(step_dir, **self.embedder_kwargs)
            self._model_key = key
        else:
            self.embedder.params = jax.device_put(checkpoint.restore_params(step_dir))
            logging.info("swapped in the parameters of %s", step_dir)
        return self.embedder


def evaluate_steps(
    path: str | os.PathLike,
    tasks: Sequence[Task | str],
    dims: Sequence[int] | None = None,
    *,
    steps: str = "all",
    watch: bool = False,
    poll_seconds: float = 30.0,
    skip: Sequence[int] = (),
    embedders: StepEmbedders | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    log: Callable[[str], Any] | None = print,
    sleep: Callable[[float], Any] = time.sleep,
) -> Iterator[dict]:
    """Yields one report row per evaluated checkpoint (see the module docstring), in step order.

    Args:
      path: a run directory, its checkpoints/ folder or a step folder (relative, `~` or gs://).
      tasks: task objects, built-in names or task folders (each built once for all steps).
      steps: "all", "latest", "best" or "N,M,...".
      watch: then keep evaluating each newer complete step as the run writes it, polling every
        `poll_seconds`, until the run's last step (`num_steps` in its config) is done; stop
        earlier with Ctrl-C (KeyboardInterrupt).
      skip: steps already evaluated (e.g. read back from an earlier report).
      embedders: reuse an existing `StepEmbedders` (default: a new one, float32).
    """
    loaded = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    embedders = embedders or StepEmbedders()
    done = set(skip)
    try:
        pending = [(s, d) for s, d in select_steps(path, steps) if s not in done]
    except checkpoint.CheckpointError:
        if not watch or complete_steps(path):  # a missing folder, or a step not there
            raise
        pending = []  # the run has not written its first checkpoint yet
    last_dir = None
    while True:
        for step, step_dir in pending:
            if log:
                log(f"step {step}: {step_dir}")
            report = evaluate_embedder(
                embedders.load(step_dir),
                loaded,
                dims,
                batch_size=batch_size,
                show_progress=show_progress,
                log=log,
            )
            done.add(step)
            last_dir = step_dir
            yield {"step": step, "checkpoint": str(step_dir), **report}
        if not watch:
            return
        if last_dir is None:
            available = complete_steps(path)
            last_dir = available[-1][1] if available else None
        final = final_step(last_dir) if last_dir is not None else None
        if final is not None and done and max(done) >= final:
            return
        sleep(poll_seconds)
        newest = max(done, default=-1)
        pending = [(s, d) for s, d in complete_steps(path) if s > newest]


def check_tasks_match(rows: Sequence[dict], tasks: Sequence[str], dims) -> None:
    """An earlier report being appended to must hold the same tasks and widths."""
    for row in rows:
        if list(row["tasks"]) != list(tasks) or (dims and row["dims"] != list(dims)):
            raise UserError(
                f"the report being appended to evaluated tasks {list(row['tasks'])} at widths "
                f"{row['dims']}, not {list(tasks)} at {list(dims) if dims else 'the defaults'} "
                "(use another --output)"
            )
