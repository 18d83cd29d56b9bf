"""Finding a task: a built-in name (`eval.builtin.BUILTIN_TASKS`) or a task folder (the layouts
are in `eval.tasks`)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from embeddinggemma_jax.errors import UserError, did_you_mean
from embeddinggemma_jax.eval.builtin import BUILTIN_TASKS
from embeddinggemma_jax.eval.files import TaskDataError, find_file
from embeddinggemma_jax.eval.tasks import TASK_TYPES, Task

__all__ = ["UnknownTaskError", "get_task", "load_task"]


class UnknownTaskError(UserError, KeyError):
    """A task name that is neither a built-in task nor a folder (a KeyError, as it always was)."""

    __str__ = Exception.__str__  # KeyError's would quote the message


_OPTIONS = {
    "Retrieval": {"query_prompt": "str", "k_values": "ints"},
    "Reranking": {"query_prompt": "str", "k_values": "ints"},
    "Classification": {"prompt": "str", "samples_per_label": "int|null", "n_experiments": "int"},
}


def load_task(folder: str | os.PathLike, task_type: str | None = None) -> Task:
    """Reads a task folder (layout in the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, "task folder not found", str(folder))
    meta_path = folder / "task.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TaskDataError(
                f"invalid JSON ({e.msg})", where=f"task.json line {e.lineno}"
            ) from e
        if not isinstance(meta, dict):
            raise TaskDataError("expected a JSON object", where="task.json")
    task_type = task_type or meta.pop("type", None)
    meta.pop("type", None)
    if task_type is None:
        if find_file(folder, "corpus.jsonl", required=False) is None:
            raise TaskDataError(
                'no "type" (and no corpus.jsonl to read it as BEIR retrieval)', where=str(meta_path)
            )
        has_candidates = find_file(folder, "candidates.jsonl", required=False) is not None
        task_type = "Reranking" if has_candidates else "Retrieval"
    if task_type not in TASK_TYPES:
        raise TaskDataError(
            f"unknown task type {task_type!r}; one of {', '.join(TASK_TYPES)}",
            where="task.json",
            field="type",
        )
    name = meta.pop("name", folder.name)
    if not isinstance(name, str) or not name:
        raise TaskDataError("expected a non-empty string", where="task.json", field="name")
    allowed = _OPTIONS.get(task_type, {"prompt": "str"})
    for key, value in meta.items():
        kind = allowed.get(key)
        ok = (
            (kind == "str" and isinstance(value, str) and value)
            or (
                kind == "ints"
                and isinstance(value, list)
                and value
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
            or (
                kind in ("int", "int|null")
                and isinstance(value, int)
                and not isinstance(value, bool)
                and value > 0
            )
            or (kind == "int|null" and value is None)
        )
        if not ok:
            why = (
                f"not an option of {task_type} tasks"
                if kind is None
                else f"expected {kind}, got {value!r:.60}"
            )
            raise TaskDataError(why, where="task.json", field=key)
    return TASK_TYPES[task_type].load(folder, name, **meta)


# --------------------------------------------------------------------------------------------
# Built-in tasks (real text shipped with Python and the project's dependencies)
# --------------------------------------------------------------------------------------------


def get_task(spec: str | os.PathLike) -> Task:
    """A built-in task by name, or a task folder by path."""
    if isinstance(spec, str) and spec in BUILTIN_TASKS:
        return BUILTIN_TASKS[spec]()
    if Path(spec).is_dir():
        return load_task(spec)
    raise UnknownTaskError(
        f"unknown task {str(spec)!r}: not a folder, nor a built-in task "
        f"({', '.join(sorted(BUILTIN_TASKS))}){did_you_mean(str(spec), BUILTIN_TASKS)}"
    )
