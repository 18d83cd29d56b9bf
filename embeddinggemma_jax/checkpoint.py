"""Training checkpoints: one Orbax `CheckpointManager` behind a small class, and loading for
inference.

Workdir layout::

    <workdir>/checkpoints/<step>/params/       float32 parameters (Orbax, sharded arrays)
                                 opt_state/    optimizer state (Orbax)
                                 meta/         JSON: step, rng, data-iterator state, eval metrics
                                 config/       JSON: the experiment config
                                 model/        JSON: what inference needs (model config, prompts,
                                               tokenizer file name and sha256), task name
    <workdir>/tokenizer.model                  the tokenizer, copied once

Retention: the last `keep` checkpoints, plus the best one by an eval metric (when evaluation
runs). `load_for_inference` reads a workdir (latest step, or best), its ``checkpoints`` folder, or
one step folder, and returns what `Embedder` needs; `restore_params` reads just the parameters
(to start a later stage from an earlier one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINTS = "checkpoints"
TOKENIZER = "tokenizer.model"
_ITEMS = ("params", "opt_state", "meta", "config", "model")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    if isinstance(x, Path):
        return str(x)
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


class Checkpointer:
    """Saves and restores train states in ``<workdir>/checkpoints``.

    Args:
      workdir: the run's directory.
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
        self.workdir = Path(workdir).absolute()
        self.directory = self.workdir / CHECKPOINTS
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
    ) -> None:
        """Saves `state` (a `train.state.TrainState`) as checkpoint `step` (asynchronously)."""
        meta = {
            "step": int(step),
            "rng": np.asarray(jax.device_get(state.rng)).astype(np.uint32).tolist(),
            "data": _to_json(data_state) if data_state is not None else None,
            "metrics": _to_json(metrics) if metrics else None,
            "best_metric": self.best_metric,
            "best_mode": self.best_mode,
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
        state = target.replace(
            step=jax.device_put(np.asarray(meta["step"], np.int32), target.step.sharding),
            params=r.params,
            opt_state=r.opt_state,
            rng=jax.device_put(np.asarray(meta["rng"], np.uint32), target.rng.sharding),
        )
        return state, meta

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
        source = Path(source)
        dest = self.workdir / TOKENIZER
        if dest.exists():
            if file_sha256(dest) != file_sha256(source):
                raise ValueError(
                    f"{dest} differs from the run's tokenizer {source}: this workdir was trained "
                    "with another tokenizer (use a new --workdir)"
                )
            return dest
        if jax.process_index() == 0:
            self.workdir.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        return dest


# -- reading checkpoints without a manager -------------------------------------------------------
def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    out = []
    for p in root.iterdir() if root.is_dir() else ():
        if p.name.isdigit() and (p / "params").is_dir() and (p / "model").is_dir():
            out.append((int(p.name), p))
    return sorted(out)


def _is_step_dir(path: Path) -> bool:
    return (path / "params").is_dir() and (path / "meta").is_dir() and (path / "model").is_dir()


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a training workdir, its checkpoints folder, or a step folder."""
    path = Path(path)
    if not path.is_dir():
        return False
    return _is_step_dir(path) or bool(_step_dirs(path / CHECKPOINTS)) or bool(_step_dirs(path))


def _read_item(step_dir: Path, item: str) -> Any:
    f = step_dir / item / "metadata"
    if not f.is_file():
        raise FileNotFoundError(f"{step_dir}: missing checkpoint item {item!r} ({f})")
    return json.loads(f.read_text())


def resolve_step_dir(path: str | os.PathLike, best: bool = False) -> Path:
    """The step folder for a workdir / checkpoints folder (latest, or best by the eval metric the
    run tracked) or a step folder itself."""
    path = Path(path).expanduser()
    if _is_step_dir(path):
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = _step_dirs(root)
    if not steps:
        raise FileNotFoundError(
            f"{path}: not a training checkpoint (expected a workdir with {CHECKPOINTS}/<step>/, "
            "a checkpoints folder, or a step folder with params/, meta/ and model/)"
        )
    if not best:
        return steps[-1][1]
    scored = []
    for step, d in steps:
        meta = _read_item(d, "meta")
        name, metrics = meta.get("best_metric"), meta.get("metrics") or {}
        if name and name in metrics:
            sign = 1.0 if meta.get("best_mode", "max") == "max" else -1.0
            scored.append((sign * float(metrics[name]), step, d))
    if not scored:
        raise ValueError(f"{root}: best=True but no checkpoint there has eval metrics")
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


def restore_params(path: str | os.PathLike, target: Any = None, *, best: bool = False) -> Any:
    """The float32 parameters of a checkpoint (a later stage's starting point).

    Args:
      path: workdir, checkpoints folder or step folder.
      target: ShapeDtypeStruct pytree (shardings optional) to restore into; None restores onto
        the first local device with the shapes the checkpoint's model config gives.
    """
    step_dir = resolve_step_dir(path, best)
    if target is None:
        from embeddinggemma_jax.model import param_shapes

        cfg = _model_config(_read_item(step_dir, "model"))
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), param_shapes(cfg)
        )
    else:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: (
                x
                if getattr(x, "sharding", None) is not None
                else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device)
            ),
            target,
        )
    with ocp.StandardCheckpointer() as ckptr:
        try:
            return ckptr.restore(step_dir / "params", target)
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"{step_dir}: its parameters do not match the model being trained ({e})"
            ) from e


def load_model_info(path: str | os.PathLike, *, best: bool = False) -> tuple[Path, dict]:
    """(step folder, the `model` item: model config, prompts, tokenizer, task)."""
    step_dir = resolve_step_dir(path, best)
    return step_dir, _read_item(step_dir, "model")


def find_tokenizer(step_dir: Path, info: Mapping[str, Any]) -> Path:
    tok = info.get("tokenizer") or {}
    name = tok.get("file", TOKENIZER)
    candidates = [step_dir / name, step_dir.parent / name, step_dir.parent.parent / name]
    for c in candidates:
        if c.is_file():
            want = tok.get("sha256")
            if want and file_sha256(c) != want:
                raise ValueError(f"{c}: sha256 differs from the one recorded in {step_dir}/model")
            return c
    raise FileNotFoundError(
        f"{step_dir}: no {name} beside the checkpoint (looked in "
        + ", ".join(str(c.parent) for c in candidates)
        + ")"
    )


def load_for_inference(path: str | os.PathLike, best: bool = False):
    """What `Embedder` needs from a training checkpoint.

    Args:
      path: a workdir, its checkpoints folder, or one step folder.
      best: with a workdir, the checkpoint with the best eval metric instead of the latest.
    Returns:
      (ModelConfig, params {"encoder", "head"} float32, tokenizer file Path, prompts dict).
    """
    step_dir, info = load_model_info(path, best=best)
    if "model_config" not in info:
        raise ValueError(
            f"{step_dir}: this checkpoint's task ({info.get('task')!r}) has no embedding model"
        )
    cfg = _model_config(info)
    params = restore_params(step_dir)
    logging.info("loaded %s (step %s)", step_dir, step_dir.name)
    return cfg, params, find_tokenizer(step_dir, info), dict(info.get("prompts") or {})
