"""Training checkpoints: one Orbax `CheckpointManager` behind a small class, and loading for
inference.

Workdir layout::

    <workdir>/checkpoints/<step>/params/       float32 parameters (Orbax, sharded arrays)
                                 opt_state/    optimizer state (Orbax; training checkpoints only)
                                 meta/         JSON: step, rng, data-iterator state, eval metrics
                                 config/       JSON: the experiment config
                                 model/        JSON: what inference needs (model config, prompts,
                                               tokenizer file name and sha256), task name
    <workdir>/tokenizer.model                  the tokenizer, copied once
    <workdir>/damaged_checkpoints/<step>/      checkpoints found damaged on resume (kept)

Retention: the last `keep` checkpoints, plus the best one by an eval metric (when evaluation
runs). Orbax writes each step under ``<step>.orbax-checkpoint-tmp-*`` and renames it when
complete, so only finished steps are ever read (`complete_steps`); a `Checkpointer` removes the
temporary folders a killed run left.

Every reader takes a run directory (newest complete step, or best), its ``checkpoints`` folder or
one step folder, relative to the current directory, with ``~`` or as a URL (``gs://...``, through
`etils.epath`): `as_path` resolves it once, at the boundary. `load_for_inference` returns what
`Embedder` needs; `restore_params` just the parameters (a later stage's start); `save_params`
writes a run directory holding parameters only (soups, quantised models), which every reader
takes like a training run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from embeddinggemma_jax.cache import atomic_path
from embeddinggemma_jax.errors import LocatedError

CHECKPOINTS = "checkpoints"
DAMAGED = "damaged_checkpoints"
TOKENIZER = "tokenizer.model"
_ITEMS = ("params", "opt_state", "meta", "config", "model")
_PARAMS_ITEMS = ("params", "meta", "config", "model")
_NEEDED = ("params", "meta", "model")  # what every reader needs in a step folder
_TMP = ".orbax-checkpoint-tmp"


class CheckpointError(LocatedError):
    """A checkpoint path that does not hold what was asked for (where = the path as given)."""


class DamagedCheckpointError(CheckpointError):
    """A complete-looking checkpoint whose files cannot be read (truncated, missing a file)."""


def as_path(path: str | os.PathLike) -> Path:
    """The absolute path of `path` (``~`` expanded, relative to the current directory, trailing
    slash dropped); a URL such as ``gs://bucket/run`` stays a URL (an `etils.epath.Path`)."""
    if isinstance(path, epath.Path) and not isinstance(path, Path):
        return path
    text = os.fspath(path)
    if "://" in text:
        return epath.Path(text.rstrip("/"))
    return Path(os.path.abspath(os.path.expanduser(text)))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with as_path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_info(path: str | os.PathLike) -> dict[str, str]:
    """The ``tokenizer`` entry of a run's model info: the file beside the checkpoints (where
    the run copies `path`) and the sha256 its loaders check."""
    return {"file": TOKENIZER, "sha256": file_sha256(path)}


def _to_json(x: Any) -> Any:
    """JSON-able copy (tuples -> lists, numpy scalars -> Python, ConfigDict -> dict)."""
    if hasattr(x, "to_dict"):
        x = x.to_dict()
    return json.loads(json.dumps(x, default=_json_default))


def _json_default(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (Path, epath.Path)):
        return str(x)
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n")[0]
    return f"{type(e).__name__}: {text[:300]}"


def _copy_file_atomic(source: Path, dest: Path) -> None:
    """`source` -> `dest` through a temporary name: a killed copy never looks complete."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(as_path(source).read_bytes())


def _place_tokenizer(workdir: Path, source: str | os.PathLike) -> Path:
    """Copies the tokenizer to ``<workdir>/tokenizer.model`` once; another one there is an error."""
    source = as_path(source)
    dest = workdir / TOKENIZER
    if dest.exists():
        if file_sha256(dest) != file_sha256(source):
            raise CheckpointError(
                f"this workdir was trained with another tokenizer than {source} "
                "(sha256 differs; use a new --workdir)",
                where=str(dest),
            )
        return dest
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        _copy_file_atomic(source, dest)
    return dest


class Checkpointer:
    """Saves and restores train states in ``<workdir>/checkpoints``.

    Args:
      workdir: the run's directory (checked writable here, before any compilation).
      keep: how many of the latest checkpoints to keep.
      best_metric: eval metric whose best checkpoint is also kept (None: only the latest).
      best_mode: "max" or "min".
      async_save: write in a background thread (`wait` before reading or exiting).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        if keep < 1:
            raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"checkpoint.best_mode must be 'max' or 'min', got {best_mode!r}")
        self.workdir = as_path(workdir)
        self.directory = self.workdir / CHECKPOINTS
        _check_writable(self.directory, shown=workdir)
        self.best_metric, self.best_mode = best_metric, best_mode
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # what a killed run was writing: never complete
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)

    # -- queries ------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    # -- save / restore -----------------------------------------------------------------------
    def save(
        self,
        step: int,
        state,
        *,
        data_state: Mapping[str, Any] | None,
        config: Mapping[str, Any] | Any,
        export_info: Mapping[str, Any],
        metrics: Mapping[str, float] | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> None:
        """Saves `state` (a `train.state.TrainState`) as checkpoint `step` (asynchronously);
        `counters` (the trainer's skipped-step counts) go into ``meta`` beside the step."""
        meta = {
            "step": int(step),
            "rng": np.asarray(jax.device_get(state.rng)).astype(np.uint32).tolist(),
            "data": _to_json(data_state) if data_state is not None else None,
            "metrics": _to_json(metrics) if metrics else None,
            "best_metric": self.best_metric,
            "best_mode": self.best_mode,
            **{str(k): int(v) for k, v in (counters or {}).items()},
        }
        keep_metrics = (
            {self.best_metric: float(metrics[self.best_metric])}
            if metrics and self.best_metric and self.best_metric in metrics
            else None
        )
        if step in self.all_steps():  # e.g. an eval step that is also the last one
            return
        self.manager.save(
            int(step),
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                opt_state=ocp.args.StandardSave(state.opt_state),
                meta=ocp.args.JsonSave(meta),
                config=ocp.args.JsonSave(_to_json(config)),
                model=ocp.args.JsonSave(_to_json(export_info)),
            ),
            metrics=keep_metrics,
            force=True,
        )

    def restore(self, step: int, target) -> tuple[Any, dict[str, Any]]:
        """(TrainState laid out like `target` (ShapeDtypeStructs with shardings), meta)."""
        r = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(target.params),
                opt_state=ocp.args.StandardRestore(target.opt_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
        meta = r.meta
        if int(meta["step"]) != int(step):
            raise ValueError(f"meta says step {meta['step']}")
        state = target.replace(
            step=jax.device_put(np.asarray(meta["step"], np.int32), target.step.sharding),
            params=r.params,
            opt_state=r.opt_state,
            rng=jax.device_put(np.asarray(meta["rng"], np.uint32), target.rng.sharding),
        )
        return state, meta

    def restore_latest(self, target) -> tuple[Any, dict[str, Any]] | None:
        """The newest intact checkpoint restored like `target`, or None when there is none yet.

        A checkpoint of another model shape or optimizer state is refused (CheckpointError:
        which entry, both shapes) before anything is read. A damaged one (a truncated or
        missing file) is moved to ``<workdir>/damaged_checkpoints/`` with a warning naming it,
        and the next older one is tried; when none is intact, CheckpointError lists them all
        (a run never silently restarts from step 0).
        """
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        damaged = []
        for step in steps:
            step_dir = self.directory / str(step)
            try:
                check_shapes(step_dir / "params", target.params, "parameter", shown=step_dir)
                check_shapes(step_dir / "opt_state", target.opt_state, "optimizer state", step_dir)
                restored = self.restore(step, target)
            except DamagedCheckpointError as e:
                reason = e.reason
            except CheckpointError:
                raise
            except Exception as e:  # a truncated / missing file, unreadable JSON, ...
                reason = _first_line(e)
            else:
                if damaged:
                    self.manager.reload()
                return restored
            moved = self._move_damaged(step)
            damaged.append(step)
            logging.warning(
                "checkpoint %s is damaged (%s); moved it to %s and trying an older one",
                step_dir,
                reason,
                moved,
            )
        self.manager.reload()
        raise CheckpointError(
            f"no intact checkpoint: steps {', '.join(map(str, damaged))} are damaged (moved to "
            f"{self.workdir / DAMAGED}); restore one by hand or start a new --workdir",
            where=str(self.directory),
        )

    def _move_damaged(self, step: int) -> Path:
        """Renames a damaged step folder out of the manager's sight (kept for inspection)."""
        dest_root = self.workdir / DAMAGED
        dest = dest_root / str(step)
        if jax.process_index() == 0:
            dest_root.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                dest = dest_root / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            (self.directory / str(step)).rename(dest)
        _sync_processes(f"egj_damaged_{step}")
        return dest

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # -- workdir files ------------------------------------------------------------------------
    def copy_tokenizer(self, source: str | os.PathLike | None) -> Path | None:
        """Copies the tokenizer into the workdir (once; a different one there is an error)."""
        if source is None:
            return None
        return _place_tokenizer(self.workdir, source)


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _check_writable(directory: Path, shown: Any) -> None:
    """UserError naming the workdir when `directory` cannot be created or written."""
    if jax.process_index() != 0:
        return
    probe = directory / f".write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CheckpointError(
            f"the workdir is not writable ({type(e).__name__}: {e.strerror or e})",
            where=str(shown),
        ) from e


# -- writing a parameters-only run --------------------------------------------------------------
def describe_model(
    model_config: Any,
    *,
    prompts: Mapping[str, str] | None = None,
    task: str = "contrastive",
    **extra: Any,
) -> dict[str, Any]:
    """The ``model`` item of a checkpoint for an embedding model (what `load_for_inference`
    reads): model config, prompt table (default: the released model's), task; the tokenizer
    entry is filled in by `save_params`."""
    from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS

    prompts = dict(DEFAULT_PROMPTS if prompts is None else prompts)
    return {
        "task": task,
        "model_config": dataclasses.asdict(model_config),
        "prompts": prompts,
        **extra,
    }


def save_params(
    workdir: str | os.PathLike,
    step: int,
    params: Any,
    *,
    model_info: Mapping[str, Any] | Any,
    config: Mapping[str, Any] | Any = None,
    tokenizer: str | os.PathLike | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``<workdir>/checkpoints/<step>/{params,meta,config,model}`` laid out like the
    Trainer's checkpoints, so every reader (`Embedder.from_pretrained`, `load_for_inference`,
    `restore_params`, ``evaluate``, ``--config.init_from``) takes it unchanged.

    Args:
      workdir: the run directory to write (created; other steps there are kept).
      step: the step number to write (an existing complete step is an error).
      params: the parameter pytree (NumPy or jax arrays), e.g. {"encoder", "head"}.
      model_info: the ``model`` item (`describe_model(...)` builds one; a bare `ModelConfig` is
        wrapped by it; `load_model_info` of a source run returns one to copy).
      config: JSON-able config stored as the ``config`` item (e.g. the soup recipe).
      tokenizer: tokenizer.model copied to ``<workdir>/tokenizer.model`` (its sha256 recorded).
      meta: extra entries for the ``meta`` item.
    Returns:
      the step folder. Orbax writes it under a temporary name and renames it when complete, and
      the tokenizer is in place before that: a killed write never looks complete.
    """
    workdir = as_path(workdir)
    directory = workdir / CHECKPOINTS
    _check_writable(directory, shown=workdir)
    if dataclasses.is_dataclass(model_info) and not isinstance(model_info, type):
        model_info = describe_model(model_info)
    info = _to_json(dict(model_info))
    if tokenizer is not None:
        placed = _place_tokenizer(workdir, tokenizer)
        info["tokenizer"] = tokenizer_info(placed)
    step_dir = directory / str(int(step))
    if step_dir.exists():
        raise CheckpointError(f"step {step} already exists", where=str(step_dir))
    record = {"step": int(step), **_to_json(dict(meta or {}))}
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True)
    with ocp.CheckpointManager(directory, options=options, item_names=_PARAMS_ITEMS) as manager:
        manager.save(
            int(step),
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                meta=ocp.args.JsonSave(record),
                config=ocp.args.JsonSave(_to_json(config) if config is not None else {}),
                model=ocp.args.JsonSave(info),
            ),
            force=True,
        )
        manager.wait_until_finished()
    return step_dir


# -- reading checkpoints without a manager -------------------------------------------------------
def _is_step_dir(path: Path) -> bool:
    return path.name.isdigit() and all((path / item).is_dir() for item in _NEEDED)


def _checkpoints_root(path: Path) -> Path:
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def _is_finalized(step_dir: Path) -> bool:
    # Locally Orbax's rename is the commit (a digits-only name); on GCS it is commit_success.txt.
    return bool(ocp.utils.is_checkpoint_finalized(step_dir))


def complete_steps(path: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint of a run directory or its checkpoints folder,
    oldest first (a step folder: itself). Orbax's in-progress ``<step>.orbax-checkpoint-tmp-*``
    folders, and steps missing params/, meta/ or model/, are not listed."""
    path = as_path(path)
    if _is_step_dir(path):
        return [(int(path.name), path)] if _is_finalized(path) else []
    root = _checkpoints_root(path)
    if not root.is_dir():
        return []
    out = [(int(p.name), p) for p in root.iterdir() if _is_step_dir(p) and _is_finalized(p)]
    return sorted(out)


def _in_progress(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if _TMP in p.name) if root.is_dir() else []


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a run directory, its checkpoints folder, or a step folder with at least
    one complete checkpoint."""
    try:
        return as_path(path).is_dir() and bool(complete_steps(path))
    except OSError:
        return False


def is_run_path(path: str | os.PathLike) -> bool:
    """Whether `path` is for these readers rather than a sentence-transformers folder or a hub
    id: a URL, a folder without ``config.json`` (run directory, checkpoints folder, step folder),
    or a missing folder inside a run (so the error can name the step that does not exist)."""
    if "://" in os.fspath(path):
        return True
    p = as_path(path)
    if p.is_dir():
        return not (p / "config.json").exists()
    return p.parent.name == CHECKPOINTS or (p.parent / CHECKPOINTS).is_dir()


def _read_item(step_dir: Path, item: str) -> Any:
    f = step_dir / item / "metadata"
    try:
        return json.loads(f.read_text())
    except FileNotFoundError as e:
        raise DamagedCheckpointError(f"missing checkpoint item {item!r}", where=str(f)) from e
    except (ValueError, OSError) as e:
        raise DamagedCheckpointError(f"unreadable ({_first_line(e)})", where=str(f)) from e


def resolve_step_dir(
    path: str | os.PathLike, best: bool = False, *, step: int | None = None
) -> Path:
    """The step folder that `path` names: a step folder itself, or in a run directory or its
    checkpoints folder the newest complete step, the given `step`, or (`best`) the best one by
    the eval metric the run tracked. CheckpointError (one line, naming `path` as given) for a
    missing folder, a folder with no complete checkpoint, or a step that does not exist."""
    where = str(path)
    p = as_path(path)
    if not p.exists() and p.name.isdigit() and p.parent.is_dir():
        have = ", ".join(str(s) for s, _ in complete_steps(p.parent)) or "none"
        raise CheckpointError(
            f"no step {p.name} in {p.parent} (complete steps: {have})", where=where
        )
    if not p.exists():
        shown = f" ({p})" if str(p) != where.rstrip("/") else ""
        raise CheckpointError(f"no such folder{shown}", where=where)
    if not p.is_dir():
        raise CheckpointError("not a folder (expected a training run directory)", where=where)
    if _TMP in p.name:
        raise CheckpointError(
            "an Orbax checkpoint still being written (or killed while writing); pass the run "
            "directory to read its newest complete step",
            where=where,
        )
    if p.name.isdigit() and (p / "params").is_dir():
        if step is not None and int(p.name) != step:
            raise CheckpointError(f"is step {p.name}, not step {step}", where=where)
        missing = [item for item in _NEEDED if not (p / item).is_dir()]
        if missing:
            raise DamagedCheckpointError(f"checkpoint lacks {', '.join(missing)}", where=where)
        return p
    root = _checkpoints_root(p)
    steps = complete_steps(root)
    if not steps:
        pending = _in_progress(root)
        if pending:
            raise CheckpointError(
                f"no complete checkpoint yet in {root} (being written: {', '.join(pending)})",
                where=where,
            )
        raise CheckpointError(
            f"no checkpoint here (expected a run directory with {CHECKPOINTS}/<step>/, its "
            f"{CHECKPOINTS} folder, or a step folder with params/, meta/ and model/)",
            where=where,
        )
    if step is not None:
        found = dict(steps)
        if step not in found:
            have = ", ".join(str(s) for s, _ in steps)
            raise CheckpointError(f"no step {step} in {root} (complete steps: {have})", where=where)
        return found[step]
    if not best:
        return steps[-1][1]
    scored = []
    for s, d in steps:
        meta = _read_item(d, "meta")
        name, metrics = meta.get("best_metric"), meta.get("metrics") or {}
        if name and name in metrics:
            sign = 1.0 if meta.get("best_mode", "max") == "max" else -1.0
            scored.append((sign * float(metrics[name]), s, d))
    if not scored:
        raise CheckpointError("best=True but no checkpoint here has eval metrics", where=where)
    return max(scored)[2]


def _model_config(info: Mapping[str, Any]):
    from embeddinggemma_jax.model import ModelConfig

    fields = dict(info["model_config"])
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"checkpoint model config has unknown fields {sorted(unknown)}")
    for k, v in fields.items():
        if isinstance(v, list):
            fields[k] = tuple(v)
    return ModelConfig(**fields)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = {}
    for path, leaf in flat:
        name = "/".join(
            str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path
        )
        out[name] = tuple(getattr(leaf, "shape", np.shape(leaf)))
    return out


def check_shapes(item_dir: Path, target: Any, what: str, shown: Any = None) -> None:
    """CheckpointError unless the arrays stored in `item_dir` have `target`'s names and shapes
    (says which entry and both shapes); DamagedCheckpointError when the metadata is unreadable."""
    where = str(shown if shown is not None else item_dir.parent)
    try:
        # The handler reads the item's own metadata (the Checkpointer looks for a step's).
        stored = ocp.PyTreeCheckpointHandler().metadata(epath.Path(item_dir))
    except Exception as e:
        raise DamagedCheckpointError(
            f"unreadable {item_dir.name} ({_first_line(e)})", where=where
        ) from e
    stored = _flat_shapes(getattr(stored, "tree", stored))
    wanted = _flat_shapes(target)
    for name, shape in wanted.items():
        if name in stored and stored[name] != shape:
            raise CheckpointError(
                f"{what} {name} is {stored[name]} in the checkpoint but {shape} in this model "
                "(a checkpoint of another model shape)",
                where=where,
            )
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} {what} entries this run has (e.g. {missing[0]})")
        if extra:
            parts.append(f"has {len(extra)} this run lacks (e.g. {extra[0]})")
        raise CheckpointError(
            "a checkpoint of another model or optimizer: it " + " and ".join(parts), where=where
        )


def restore_params(
    path: str | os.PathLike, target: Any = None, *, best: bool = False, step: int | None = None
) -> Any:
    """The float32 parameters of a checkpoint (a later stage's starting point).

    Args:
      path: run directory, checkpoints folder or step folder (any form `as_path` takes).
      target: ShapeDtypeStruct pytree (shardings optional) to restore into; None restores onto
        the first local device with the shapes the checkpoint's model config gives.
      best, step: which checkpoint of a run directory (default: the newest complete one).
    """
    step_dir = resolve_step_dir(path, best, step=step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if target is None:
        from embeddinggemma_jax.model import param_shapes

        cfg = _model_config(_read_item(step_dir, "model"))
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), param_shapes(cfg)
        )
    else:
        target = jax.tree.map(
            lambda x: (
                x
                if getattr(x, "sharding", None) is not None
                else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
            ),
            target,
        )
    check_shapes(step_dir / "params", target, "parameter", shown=step_dir)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            return ckptr.restore(step_dir / "params", target)
        except Exception as e:  # the shapes matched: the files themselves are damaged
            raise DamagedCheckpointError(
                f"cannot read its parameters ({_first_line(e)})", where=str(step_dir)
            ) from e


def load_model_info(
    path: str | os.PathLike, *, best: bool = False, step: int | None = None
) -> tuple[Path, dict]:
    """(step folder, the `model` item: model config, prompts, tokenizer, task)."""
    step_dir = resolve_step_dir(path, best, step=step)
    return step_dir, _read_item(step_dir, "model")


def find_tokenizer(step_dir: Path, info: Mapping[str, Any]) -> Path:
    """The tokenizer file recorded in `info` beside `step_dir` (the run directory's copy), its
    sha256 checked; a local copy when the run is remote (SentencePiece reads local files)."""
    tok = info.get("tokenizer") or {}
    name = tok.get("file", TOKENIZER)
    step_dir = as_path(step_dir)
    candidates = [step_dir / name, step_dir.parent / name, step_dir.parent.parent / name]
    for c in candidates:
        if c.is_file():
            want = tok.get("sha256")
            if want and file_sha256(c) != want:
                raise CheckpointError(
                    f"sha256 differs from the one recorded in {step_dir}/model", where=str(c)
                )
            return c if isinstance(c, Path) else _local_copy(c, want or file_sha256(c))
    raise CheckpointError(
        f"no {name} beside the checkpoint (looked in "
        + ", ".join(str(c.parent) for c in candidates)
        + ")",
        where=str(step_dir),
    )


def _local_copy(remote: epath.Path, sha256: str) -> Path:
    import tempfile

    dest = Path(tempfile.gettempdir()) / "embeddinggemma-jax" / sha256 / remote.name
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_file_atomic(remote, dest)
    return dest


def load_for_inference(path: str | os.PathLike, best: bool = False, *, step: int | None = None):
    """What `Embedder` needs from a training checkpoint.

    Args:
      path: a run directory, its checkpoints folder, or one step folder (any form `as_path`
        takes: relative, ``~``, trailing slash, ``gs://``).
      best: with a run directory, the checkpoint with the best eval metric instead of the newest.
      step: with a run directory, this step.
    Returns:
      (ModelConfig, params {"encoder", "head"} float32, tokenizer file Path, prompts dict).
    """
    step_dir, info = load_model_info(path, best=best, step=step)
    if "model_config" not in info:
        raise CheckpointError(
            f"this checkpoint's task ({info.get('task')!r}) has no embedding model",
            where=str(step_dir),
        )
    cfg = _model_config(info)
    params = restore_params(step_dir)
    logging.info("loaded %s (step %s)", step_dir, step_dir.name)
    return cfg, params, find_tokenizer(step_dir, info), dict(info.get("prompts") or {})
