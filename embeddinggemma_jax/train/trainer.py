"""The generic trainer: mesh, sharded state, jitted step, checkpoints, logging, evaluation.

    trainer = Trainer(config, workdir)          # task from config.task (default "contrastive")
    summary = trainer.fit()                     # resumes from workdir's latest checkpoint

Order of work in the constructor: the config's ``prepare`` step (``"module:function"``, e.g. the
quickstart's dataset and tokenizer build; its return value is ``trainer.prepared``), mesh, task
(by name from `step.TASKS`: model config, tokenizer), the data pipeline (opened and validated, so
bad data fails here), shardings, optimizer (``config.optimizer`` plus the task's freezing rules),
jitted step. `fit` then restores
the latest checkpoint (params, optimizer state, step, data-iterator state) or initialises, and
trains to ``config.num_steps``:

- shows a progress bar of *completed* steps (at most one more step is dispatched ahead, so its
  rate and ETA are the device's);
- logs every ``config.log.every`` steps (metrics averaged over the window; the task's
  ``shown_metrics`` on stdout) to stdout,
  TensorBoard (``<workdir>/tensorboard``) and ``<workdir>/metrics.jsonl``, with tokens/s and an
  MFU estimate (`train.perf`; "n/a" on CPU unless ``config.peak_flops_per_device`` is set);
- evaluates every ``config.eval.every`` steps (and at the start / end when asked) and saves a
  checkpoint at every evaluation (so the best one by ``config.checkpoint.best_metric`` is kept);
- saves every ``config.checkpoint.every`` steps and at the end;
- skips a step whose loss or gradient is NaN / inf (``config.nonfinite.policy = "skip"``: params
  and optimizer state stay as they were, so a NaN never reaches them or a checkpoint), logs the
  count (``skipped_steps``) and stops with `NonFiniteError` after
  ``config.nonfinite.max_consecutive`` such steps in a row;
- on SIGTERM (preemption) or Ctrl-C: finishes the current step, saves, and stops
  (``summary["preempted"]``; `main` then exits with status 143). With several processes a
  SIGTERM to any one of them stops all at the same step (jax.distributed's preemption service),
  and they save that step together.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from embeddinggemma_jax import checkpoint, parallel
from embeddinggemma_jax.cache import write_atomic
from embeddinggemma_jax.errors import LocatedError
from embeddinggemma_jax.train import perf
from embeddinggemma_jax.train.optimizer import make_optimizer
from embeddinggemma_jax.train.state import (
    TrainState,
    abstract_state,
    create_state,
    state_shardings,
)
from embeddinggemma_jax.train.step import TrainTask, make_train_step, task_class


def _cfg(config: Any, path: str, default: Any = None) -> Any:
    node = config
    for part in path.split("."):
        if node is None:
            return default
        node = node.get(part) if hasattr(node, "get") else getattr(node, part, None)
    return default if node is None else node


def make_task(config: Any, mesh) -> TrainTask:
    """The task named by ``config.task`` (registered in `train.step.TASKS`)."""
    cls = task_class(_cfg(config, "task", "contrastive"))
    return cls(config, batch_shards=parallel.batch_shards(mesh))


def run_prepare(config: Any) -> Any:
    """Runs the config's ``prepare`` step (``"module:function"``, called as function(config));
    returns what it returns (None when there is none)."""
    spec = _cfg(config, "prepare", "")
    if not spec:
        return None
    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(module), name)(config)


def _trim_log(path: Path, step: int) -> None:
    """Keeps the rows of `path` (JSONL) up to `step`, the checkpoint resumed from: a killed run
    logged steps after its last checkpoint, and they are redone (at step 0 nothing is kept: the
    start's evaluation is redone too). A torn last line goes as well."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and step > 0 and int(row.get("step", 0)) <= step:
            kept.append(line)
    write_atomic(path, "".join(kept))


class NonFiniteError(LocatedError):
    """Too many consecutive train steps had a NaN / inf loss or gradient."""


class _StopFlag:
    """Set by SIGTERM / SIGINT; the loop saves and stops at the next step boundary."""

    def __init__(self):
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None


class Trainer:
    """Trains `task` (default: from ``config.task``) in `workdir`.

    Args:
      config: the experiment ConfigDict (keys and defaults: `train.config.base_config`).
      workdir: checkpoints, logs, tokenizer copy.
      task: a `TrainTask`, or a function ``mesh -> TrainTask`` (default: `make_task`).
      on_step: called as ``on_step(trainer, step)`` after each step (hooks, tests).
      mesh: use this mesh instead of one from ``config.mesh`` (e.g. a subset of the devices).
    """

    def __init__(
        self,
        config: Any,
        workdir: str | Path,
        task: TrainTask | Callable[[Any], TrainTask] | None = None,
        *,
        on_step: Callable[[Trainer, int], None] | None = None,
        mesh: jax.sharding.Mesh | None = None,
    ):
        parallel.initialize_distributed(_cfg(config, "distributed", "auto"))
        self.config = config
        self.prepared = run_prepare(config)
        self.workdir = Path(workdir).absolute()
        self.on_step = on_step
        self.num_steps = int(_cfg(config, "num_steps"))
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        self.mesh = (
            mesh if mesh is not None else parallel.make_mesh(_cfg(config, "mesh", {"data": -1}))
        )
        self.rules = parallel.rules_from_config(_cfg(config, "logical_axis_rules"))
        if task is None:
            task = make_task(config, self.mesh)
        elif not isinstance(task, TrainTask):
            task = task(self.mesh)
        self.task = task
        gbs = task.global_batch_size
        shards = parallel.batch_shards(self.mesh)
        if gbs is not None and gbs % shards:
            raise LocatedError(
                f"{gbs} is not divisible by the mesh's {shards} batch shards "
                f"({parallel.describe(self.mesh)})",
                where="config.data.global_batch_size",
            )
        # Open (and validate) the data before any expensive model work.
        self.data_iter = task.data_iterator(0)

        self.tx, self.lr_fn = make_optimizer(
            config.get("optimizer"), self.num_steps, trainable=task.trainable()
        )
        self.param_shapes = task.param_shapes()
        self.param_shardings = parallel.param_shardings(
            task.param_logical_axes(), self.param_shapes, self.mesh, self.rules
        )
        self.state_shardings = state_shardings(
            self.tx, self.param_shapes, self.param_shardings, self.mesh
        )
        frozen, frozen_axes = task.frozen_params()
        self.frozen, frozen_shardings = None, None
        if frozen is not None:
            frozen_shardings = parallel.param_shardings(frozen_axes, frozen, self.mesh, self.rules)
            self.frozen = jax.device_put(frozen, frozen_shardings)
        self.nonfinite_policy = str(_cfg(config, "nonfinite.policy", "skip"))
        if self.nonfinite_policy not in ("skip", "apply"):
            raise LocatedError(
                f"must be 'skip' or 'apply', got {self.nonfinite_policy!r}",
                where="config.nonfinite.policy",
            )
        self.max_nonfinite = int(_cfg(config, "nonfinite.max_consecutive", 10))
        self.skipped_steps = 0  # non-finite steps skipped in this run (kept in checkpoints)
        self._consecutive_skips = 0
        self.step_fn = make_train_step(
            task,
            self.tx,
            self.lr_fn,
            self.mesh,
            self.rules,
            self.state_shardings,
            frozen_shardings,
            skip_nonfinite=self.nonfinite_policy == "skip",
        )
        self.batch_sharding = NamedSharding(
            self.mesh, PartitionSpec(parallel.batch_axes(self.mesh))
        )
        eval_on = bool(_cfg(config, "eval.task", ""))
        self.eval_every = int(_cfg(config, "eval.every", 0)) if eval_on else 0
        self.eval_at_start = bool(eval_on and _cfg(config, "eval.at_start", False))
        self.eval_at_end = bool(eval_on and _cfg(config, "eval.at_end", True))
        self.checkpointer = checkpoint.Checkpointer(
            self.workdir,
            keep=int(_cfg(config, "checkpoint.keep", 3)),
            best_metric=_cfg(config, "checkpoint.best_metric") if eval_on else None,
            best_mode=_cfg(config, "checkpoint.best_mode", "max"),
            async_save=bool(_cfg(config, "checkpoint.async_save", True)),
        )
        self.save_every = int(_cfg(config, "checkpoint.every", 0))
        self.log_every = max(1, int(_cfg(config, "log.every", 10)))
        self.is_main = jax.process_index() == 0
        self.peak_flops = perf.peak_flops_per_device(
            task.compute_dtype, _cfg(config, "peak_flops_per_device"), self.mesh.devices.flat[0]
        )
        self.state: TrainState | None = None
        self._start_step = 0
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
        self._stop = _StopFlag()
        self._writer = None
        self._jsonl = None

    # -- state ----------------------------------------------------------------------------------
    def restore_or_init(self) -> int:
        """Restores the newest intact checkpoint of the workdir (damaged ones are moved aside
        with a warning: `Checkpointer.restore_latest`), or initialises; returns the step."""
        self.checkpointer.copy_tokenizer(self.task.tokenizer_file())  # another one: UserError
        target = abstract_state(self.tx, self.param_shapes, self.state_shardings)
        restored = self.checkpointer.restore_latest(target)
        if restored is not None:
            self.state, meta = restored
            latest = int(meta["step"])
            self.skipped_steps = int(meta.get("skipped_steps") or 0)
            self._consecutive_skips = int(meta.get("consecutive_skips") or 0)
            if meta.get("data") is not None:
                self.data_iter.set_state(meta["data"])
            else:
                self.data_iter = self.task.data_iterator(latest)
            logging.info("resumed from %s at step %d", self.checkpointer.directory, latest)
            self._start_step = latest
            return latest
        seed = int(_cfg(self.config, "seed", 0))
        rng = jax.random.key(seed)
        params = self.task.initial_params(jax.random.fold_in(rng, 1), self.param_shardings)
        self.state = create_state(params, self.tx, self.state_shardings, seed)
        self._start_step = 0
        return 0

    def save(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        self.checkpointer.save(
            step,
            self.state,
            data_state=self.data_iter.get_state(),
            config=self.config,
            export_info=self.task.export_info(),
            metrics=metrics,
            counters={
                "skipped_steps": self.skipped_steps,
                "consecutive_skips": self._consecutive_skips,
            },
        )

    # -- logging --------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        if not self.is_main:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.config.to_dict() if hasattr(self.config, "to_dict") else dict(self.config)
        text = json.dumps(checkpoint._to_json(cfg), indent=2) + "\n"
        write_atomic(self.workdir / "train_config.json", text)
        _trim_log(self.workdir / "metrics.jsonl", self._start_step)
        self._jsonl = open(self.workdir / "metrics.jsonl", "a")
        if _cfg(self.config, "log.tensorboard", True):
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.workdir / "tensorboard"))

    def _close_logs(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def _write(self, split: str, step: int, values: Mapping[str, float]) -> None:
        row = {"step": step, "split": split, **values}
        self.history[split].append(row)
        if not self.is_main:
            return
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._writer.add_scalar(f"{split}/{k}", v, step)
            self._writer.flush()

    def _say(self, bar, text: str) -> None:
        if not self.is_main:
            return
        if bar is not None and not bar.disable:
            bar.write(text)
        else:
            print(text, flush=True)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, step: int, bar=None) -> dict[str, float] | None:
        start = time.perf_counter()
        metrics = self.task.evaluate(self.state.params, step)
        if metrics is None:
            return None
        metrics = {k: float(v) for k, v in metrics.items()}
        seconds = time.perf_counter() - start
        self._write("eval", step, {**metrics, "seconds": seconds})
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self._say(bar, f"eval step {step}: {shown}  ({seconds:.1f} s)")
        return metrics

    # -- the loop -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread() or (
            parallel.preemption_service()
        ):
            # Several processes: jax.distributed's service catches SIGTERM (a Python handler
            # would replace it) and every process stops at the same step.
            yield
            return

        def on_term(signum, frame):
            self._stop.reason = "SIGTERM"

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _preemption_requested(self, step: int) -> bool:
        if self._stop:
            return True
        if parallel.preemption_service():
            from jax.experimental import multihost_utils

            return bool(multihost_utils.reached_preemption_sync_point(step))
        return False

    def fit(self) -> dict[str, Any]:
        """Trains to ``config.num_steps``; returns {"step", "preempted", "history", ...}."""
        if self.state is None:
            self.restore_or_init()
        start_step = self._start_step
        self.checkpointer.copy_tokenizer(self.task.tokenizer_file())
        self._open_logs()
        if self.is_main:
            logging.info(
                "training %s from step %d to %d on %s",
                self.task.name,
                start_step,
                self.num_steps,
                parallel.describe(self.mesh),
            )
        bar = tqdm(
            total=self.num_steps,
            initial=start_step,
            desc="train",
            unit="step",
            disable=not (self.is_main and _cfg(self.config, "log.progress", True)),
            dynamic_ncols=True,
        )
        step = start_step
        preempted = False
        last_eval: dict[str, float] | None = None
        try:
            with self._signals():
                if start_step == 0 and self.eval_at_start:
                    last_eval = self.evaluate(0, bar)
                window: list[Any] = []
                tokens = flops = 0.0
                t0 = None  # the window's clock starts after the first (compiling) step
                in_flight = None  # metrics of the dispatched step the bar has not counted yet

                def complete():  # the bar counts a step once the device has finished it
                    nonlocal in_flight
                    if in_flight is not None:
                        jax.block_until_ready(in_flight)
                        bar.update(1)
                        if "nonfinite" in in_flight:
                            self._count_nonfinite(bool(in_flight["nonfinite"]), bar)
                        in_flight = None

                while step < self.num_steps:
                    try:
                        host = next(self.data_iter)
                    except StopIteration:
                        complete()
                        self._say(bar, f"data exhausted at step {step}")
                        break
                    stats = self.task.batch_stats(host)
                    batch = self.task.device_batch(host, self.batch_sharding)
                    self.state, metrics = self.step_fn(self.state, batch, self.frozen)
                    step += 1
                    window.append(metrics)
                    complete()  # the previous step: at most this one stays in flight
                    in_flight = metrics
                    if t0 is None:
                        complete()
                        t0, window_start = time.perf_counter(), step
                        tokens = flops = 0.0
                    else:
                        tokens += stats["tokens"] * jax.process_count()
                        flops += stats["flops"] * jax.process_count()
                    is_log = step % self.log_every == 0 or step == self.num_steps
                    eval_now = (self.eval_every and step % self.eval_every == 0) or (
                        step == self.num_steps and self.eval_at_end
                    )
                    save_now = (self.save_every and step % self.save_every == 0) or (
                        step == self.num_steps
                    )
                    if is_log or eval_now or save_now:
                        complete()
                    if is_log:
                        values = self._window_values(window)
                        elapsed = time.perf_counter() - t0
                        steps_timed = step - window_start
                        if steps_timed > 0 and elapsed > 0:
                            values["tokens_per_s"] = tokens / elapsed
                            values["steps_per_s"] = steps_timed / elapsed
                            if self.peak_flops:
                                values["mfu"] = (
                                    flops / elapsed / (self.peak_flops * self.mesh.devices.size)
                                )
                        self._log_train(bar, step, values)
                        window, tokens, flops = [], 0.0, 0.0
                        t0, window_start = time.perf_counter(), step
                    if eval_now:
                        last_eval = self.evaluate(step, bar)
                        self.save(step, last_eval)
                        t0, window_start, tokens, flops = time.perf_counter(), step, 0.0, 0.0
                    elif save_now:
                        self.save(step)
                    if self.on_step is not None:
                        self.on_step(self, step)
                    if step < self.num_steps and self._preemption_requested(step):
                        complete()
                        reason = self._stop.reason or "preemption"
                        self._say(bar, f"{reason}: saving step {step}")
                        logging.info(
                            "process %d: %s, saving step %d", jax.process_index(), reason, step
                        )
                        self.save(step)
                        preempted = True
                        break
        except KeyboardInterrupt:
            self._say(bar, f"interrupted: saving step {step}")
            if self.state is not None and step > start_step:
                self.save(step)
            self.checkpointer.wait()
            raise
        finally:
            bar.close()
            self.checkpointer.wait()
            self._close_logs()
        self._start_step = step
        return {
            "step": step,
            "preempted": preempted,
            "history": self.history,
            "eval": last_eval,
            "workdir": str(self.workdir),
        }

    def _count_nonfinite(self, skipped: bool, bar) -> None:
        """Counts a skipped non-finite step; NonFiniteError after too many in a row."""
        if not skipped:
            self._consecutive_skips = 0
            return
        self.skipped_steps += 1
        self._consecutive_skips += 1
        n = self._consecutive_skips
        if n >= self.max_nonfinite:
            raise NonFiniteError(
                f"{n} consecutive steps with a non-finite loss or gradient (skipped, the params "
                f"are those before them; the limit is config.nonfinite.max_consecutive="
                f"{self.max_nonfinite}); lower the learning rate or check the data",
                where="training",
            )

    def _window_values(self, window: list[Any]) -> dict[str, float]:
        fetched = jax.device_get(window)
        keys = fetched[0].keys()
        return {
            str(k): float(np.mean([np.asarray(m[k], np.float64) for m in fetched])) for k in keys
        }

    def _log_train(self, bar, step: int, values: dict[str, float]) -> None:
        if "nonfinite" in values:
            values["skipped_steps"] = float(self.skipped_steps)
        self._write("train", step, values)
        mfu = values.get("mfu")
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
        tps = values.get("tokens_per_s")
        bar.set_postfix(
            loss=f"{values['loss']:.4f}",
            tok_s=f"{tps:,.0f}" if tps else "-",
            mfu=mfu_text,
            refresh=False,
        )
        shown = "  ".join(f"{k}={values[k]:.4g}" for k in self.task.shown_metrics if k in values)
        if values.get("skipped_steps"):
            shown += f"  skipped={int(values['skipped_steps'])}"
        lr = values.get("learning_rate", float("nan"))
        self._say(
            bar,
            f"step {step}: {shown}  lr={lr:.3g}  tokens/s={tps or 0:,.0f}  mfu={mfu_text}",
        )

    def close(self) -> None:
        self.checkpointer.close()
