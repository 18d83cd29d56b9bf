"""Scores of a model on evaluation tasks grouped by task group: what the mixture search optimises
and what the soup reports.

A task set is ``{group: [task spec, ...]}`` (a spec is a built-in task name or a task folder, as
`eval.get_task` takes them). On the command line it is written ``group=spec,group=spec,...``; a
spec without ``group=`` is its own group. Each task is scored by its type's main score at the
model's full width; a group's score is the mean over its tasks, and the overall score the mean
over groups (every group counts the same, however many tasks it has).

Scores::

    {"tasks": {task name: main score}, "groups": {group: mean}, "mean": mean over groups}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from embeddinggemma_jax.errors import LocatedError


def parse_task_groups(text: str | Sequence[str], where: str) -> dict[str, list[str]]:
    """``"code=stdlib-code-search,task=path/to/dir"`` (or a list of such items) -> task set."""
    items = text.split(",") if isinstance(text, str) else list(text)
    groups: dict[str, list[str]] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        group, sep, spec = item.partition("=")
        if not sep:
            group, spec = item, item
        if not group.strip() or not spec.strip():
            raise LocatedError(f"expected GROUP=TASK or TASK, got {item!r}", where=where)
        groups.setdefault(group.strip(), []).append(spec.strip())
    return groups


def task_groups(spec: Any, where: str) -> dict[str, list[str]]:
    """A task set from a config value: a mapping group -> spec(s), or the command-line form."""
    if spec is None or spec == "":
        return {}
    if hasattr(spec, "to_dict"):
        spec = spec.to_dict()
    if isinstance(spec, Mapping):
        out = {}
        for group, specs in spec.items():
            specs = [specs] if isinstance(specs, str) else list(specs)
            if not specs:
                raise LocatedError(f"group {group!r} has no tasks", where=where)
            out[str(group)] = [str(s) for s in specs]
        return out
    return parse_task_groups(spec, where)


class GroupedTasks:
    """The tasks of a task set, loaded once (a bad spec fails here, before any training)."""

    def __init__(self, groups: Mapping[str, Sequence[str]], where: str):
        from embeddinggemma_jax.eval import get_task

        self.groups: dict[str, list] = {}
        for group, specs in groups.items():
            loaded = []
            for spec in specs:
                try:
                    loaded.append(get_task(spec))
                except (FileNotFoundError, ValueError, KeyError) as e:
                    raise LocatedError(f"task {spec!r}: {e}", where=where) from e
            self.groups[group] = loaded
        names = [t.name for ts in self.groups.values() for t in ts]
        if len(set(names)) != len(names):
            raise LocatedError(f"a task appears twice: {names}", where=where)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def score(self, embedder, batch_size: int = 64) -> dict[str, Any]:
        """Main score of every task at the model's full width, per group and overall."""
        from embeddinggemma_jax.eval import TruncatingEncoder

        full = embedder.config.output_dim

        def encode(texts, prompt_name, dim):
            return embedder.encode(
                list(texts), prompt_name=prompt_name, dim=dim, batch_size=batch_size
            )

        tasks, groups = {}, {}
        for group, loaded in self.groups.items():
            for task in loaded:
                tasks[task.name] = float(
                    task.evaluate(TruncatingEncoder(encode, full), [full])[full]["main_score"]
                )
            groups[group] = float(np.mean([tasks[t.name] for t in loaded]))
        return {"tasks": tasks, "groups": groups, "mean": float(np.mean(list(groups.values())))}
