"""Model soups: the average of the parameters of several finetuning runs (arXiv 2509.20354 §3.3:
EmbeddingGemma is the unweighted average of runs on different task mixtures; Wortsman et al.
2022, "Model soups").

    python -m embeddinggemma_jax.soup RUN_OR_STEP_DIR... --output DIR [--method uniform|greedy] \\
        [--dev_tasks code=stdlib-code-search,...] [--eval_tasks ...]

Each ingredient is a training workdir (its latest checkpoint) or a step folder. Only the
parameters are read (never the optimizer state), one ingredient at a time: the soup is a running
float32 mean ``m += (x - m) / k``, so at most the mean and one ingredient are in memory, and a soup
of identical checkpoints is that checkpoint bit for bit.

- ``uniform``: the mean of all ingredients.
- ``greedy`` (Wortsman et al., Recipe 1): ingredients sorted by their held-out dev score
  (``dev_tasks``, best first); each is added only if the soup's dev score strictly improves, so the
  soup never scores below its best ingredient on dev.

Ingredients must share the parameter tree (structure and shapes) and the tokenizer (sha256); the
first pair that differs is refused in one line naming both. Ingredients that do not share their
recorded initial checkpoint (``config.init_from``) get a warning: averaging runs from different
starting points rarely works.

Output: a normal run directory (``DIR/checkpoints/<step>/params`` + model, config and tokenizer
files, the step being the largest ingredient step) that `Embedder.from_pretrained`, `evaluate` and
``--config.init_from`` read as they read any training run, plus ``DIR/soup_report.json``: the
method, the ingredients (kept or not), and every ingredient's and the soup's scores per task and
task group (`grouped_eval`). It is written under a temporary name beside DIR and renamed at the
end, so a killed soup leaves nothing that looks complete (the rerun clears the leftover).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from embeddinggemma_jax import checkpoint, cli
from embeddinggemma_jax.errors import LocatedError, UserError
from embeddinggemma_jax.grouped_eval import GroupedTasks, parse_task_groups

REPORT = "soup_report.json"
METHODS = ("uniform", "greedy")


@dataclasses.dataclass
class Ingredient:
    """One run to average: where it is and what its checkpoint records."""

    path: str  # as given
    step_dir: Path
    info: dict  # the checkpoint's `model` item
    config: dict  # the checkpoint's `config` item ({} when absent)

    @property
    def step(self) -> int:
        return int(self.step_dir.name)

    @property
    def model_config(self):
        return checkpoint._model_config(self.info)

    @property
    def tokenizer_sha256(self) -> str | None:
        return (self.info.get("tokenizer") or {}).get("sha256")

    @property
    def init_from(self) -> str:
        return str(self.config.get("init_from") or "")


def open_ingredient(path: str | os.PathLike) -> Ingredient:
    """Reads an ingredient's metadata (no arrays); a path that is no checkpoint is a UserError."""
    step_dir, info = checkpoint.load_model_info(path)  # a bad path is a LocatedError
    if "model_config" not in info:
        raise UserError(f"{path}: {step_dir} holds no embedding model (task {info.get('task')!r})")
    try:
        config = checkpoint._read_item(step_dir, "config")
    except checkpoint.DamagedCheckpointError:  # written without a config item
        config = {}
    return Ingredient(str(path), step_dir, info, config)


def _leaf_paths(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): (tuple(x.shape), str(x.dtype))
        for path, x in flat
    }


def check_compatible(ingredients: Sequence[Ingredient]) -> list[str]:
    """Raises UserError on the first pair that cannot be averaged; returns warnings."""
    from embeddinggemma_jax.model import param_shapes

    first = ingredients[0]
    ref = _leaf_paths(param_shapes(first.model_config))
    for other in ingredients[1:]:
        pair = f"{first.step_dir} and {other.step_dir}"
        mine = _leaf_paths(param_shapes(other.model_config))
        missing = sorted(set(ref) ^ set(mine))
        if missing:
            raise UserError(
                f"cannot soup {pair}: their parameter trees differ in structure "
                f"(e.g. {missing[0]!r} is in only one)"
            )
        for name, spec in ref.items():
            if mine[name] != spec:
                raise UserError(
                    f"cannot soup {pair}: parameter {name!r} has shape {spec[0]} in the first "
                    f"and {mine[name][0]} in the second"
                )
        if first.tokenizer_sha256 != other.tokenizer_sha256:
            raise UserError(
                f"cannot soup {pair}: they use different tokenizers (sha256 "
                f"{str(first.tokenizer_sha256)[:12]} vs {str(other.tokenizer_sha256)[:12]})"
            )
    warnings = []
    inits = {_same_path(i.init_from) for i in ingredients}
    if len(inits) > 1:
        warnings.append(
            "the ingredients do not share their initial checkpoint (config.init_from: "
            + ", ".join(f"{i.step_dir}: {i.init_from or 'random init'}" for i in ingredients)
            + "); a soup of runs from different starting points rarely works"
        )
    return warnings


def _same_path(p: str) -> str:
    if p and Path(p).exists():
        try:
            return str(checkpoint.resolve_step_dir(p))
        except (FileNotFoundError, ValueError):
            return str(Path(p).resolve())
    return p


def read_params(ingredient: Ingredient) -> list[np.ndarray]:
    """The ingredient's parameters as writable float32 host arrays (flattened, tree order)."""
    leaves = jax.tree.leaves(checkpoint.restore_params(ingredient.step_dir))
    out = []
    for i in range(len(leaves)):  # convert leaf by leaf so two copies never coexist
        out.append(np.array(leaves[i], dtype=np.float32, copy=True))
        leaves[i] = None
    return out


def _treedef(ingredient: Ingredient):
    from embeddinggemma_jax.model import param_shapes

    return jax.tree.structure(param_shapes(ingredient.model_config))


def mix_into(mean: list[np.ndarray], x: list[np.ndarray], count: int) -> list[np.ndarray]:
    """``x`` becomes the mean of `count` ingredients, in place: ``mean + (x - mean) / count``,
    where `mean` averages the first ``count - 1``. Returns `x`."""
    for m, a in zip(mean, x):
        np.subtract(a, m, out=a)
        np.divide(a, np.float32(count), out=a)
        np.add(a, m, out=a)
    return x


class _Scorer:
    """Scores parameter lists with the first ingredient's model, tokenizer and prompts."""

    def __init__(self, ingredient: Ingredient, batch_size: int):
        from embeddinggemma_jax.text import Tokenizer

        self.config = dataclasses.replace(ingredient.model_config, scan_layers=True)
        self.tokenizer = Tokenizer(checkpoint.find_tokenizer(ingredient.step_dir, ingredient.info))
        self.prompts = dict(ingredient.info.get("prompts") or {}) or None
        self.max_length = int(ingredient.info.get("max_length") or self.config.max_length)
        self.treedef = _treedef(ingredient)
        self.batch_size = batch_size
        self._embedder = None

    def __call__(self, tasks: GroupedTasks, leaves: list[np.ndarray]) -> dict | None:
        if not tasks:
            return None
        from embeddinggemma_jax.embedder import Embedder

        params = jax.tree.unflatten(self.treedef, leaves)
        if self._embedder is None:  # one model for every score: compiled once
            self._embedder = Embedder(
                self.config,
                params,
                self.tokenizer,
                prompts=self.prompts,
                max_length=self.max_length,
                pack_length=None,  # padded buckets: few shapes to compile
            )
        self._embedder.params = jax.device_put(params)
        scores = tasks.score(self._embedder, self.batch_size)
        self._embedder.params = None  # not a third copy while the next ingredient is read
        return scores


def _partial_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


def make_soup(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    method: str = "uniform",
    dev_tasks: GroupedTasks | None = None,
    eval_tasks: GroupedTasks | None = None,
    overwrite: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Averages the checkpoints at `paths` into the run directory `output`; returns the report.

    Args:
      paths: ingredients (workdirs or step folders).
      output: the soup's run directory (must not exist unless `overwrite`).
      method: "uniform" or "greedy" (greedy needs `dev_tasks`).
      dev_tasks: held-out dev tasks: greedy selection, and reported.
      eval_tasks: further tasks only reported (e.g. the test split).
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise LocatedError(
            f"unknown method {method!r} (known: {', '.join(METHODS)})", where="--method"
        )
    dev_tasks = dev_tasks or GroupedTasks({}, "dev_tasks")
    eval_tasks = eval_tasks or GroupedTasks({}, "eval_tasks")
    if method == "greedy" and not dev_tasks:
        raise LocatedError(
            "the greedy soup needs held-out dev tasks to select by", where="--dev_tasks"
        )
    if not paths:
        raise UserError("no ingredients given")
    output = Path(output).absolute()
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists (choose another --output, or --overwrite)")
    ingredients = [open_ingredient(p) for p in paths]
    warnings = check_compatible(ingredients)
    for w in warnings:
        logging.warning("%s", w)
        log(f"warning: {w}")
    partial = _partial_dir(output)
    if partial.exists():  # a killed run's leftover
        shutil.rmtree(partial)

    score = _Scorer(ingredients[0], batch_size)
    entries = [
        {"path": i.path, "step_dir": str(i.step_dir), "step": i.step, "init_from": i.init_from}
        for i in ingredients
    ]
    bar = tqdm(
        total=len(ingredients), desc=f"{method} soup", unit="ingredient", disable=not progress
    )
    if method == "greedy" or dev_tasks or eval_tasks:
        # Score every ingredient (one in memory at a time).
        for ingredient, entry in zip(ingredients, entries):
            leaves = read_params(ingredient)
            entry["dev"] = score(dev_tasks, leaves)
            entry["eval"] = score(eval_tasks, leaves)
            del leaves
            shown = f"dev {entry['dev']['mean']:.4f}" if entry["dev"] else ""
            log(f"ingredient {ingredient.step_dir}: {shown}".rstrip(": "))
    order = list(range(len(ingredients)))
    if method == "greedy":
        order.sort(key=lambda i: -entries[i]["dev"]["mean"])  # stable: ties keep the given order

    mean = read_params(ingredients[order[0]])
    entries[order[0]]["kept"] = True
    count, soup_dev = 1, entries[order[0]].get("dev")
    bar.update(1)
    for i in order[1:]:
        x = mix_into(mean, read_params(ingredients[i]), count + 1)
        if method == "greedy":
            candidate = score(dev_tasks, x)
            entries[i]["soup_dev_if_added"] = candidate
            keep = candidate["mean"] > soup_dev["mean"]
            log(
                f"greedy: {ingredients[i].step_dir}: soup dev {candidate['mean']:.4f} vs "
                f"{soup_dev['mean']:.4f}: {'kept' if keep else 'left out'}"
            )
        else:
            keep = True
        entries[i]["kept"] = keep
        if keep:
            mean, count = x, count + 1
            if method == "greedy":
                soup_dev = candidate
        del x
        bar.update(1)
    bar.close()

    if method == "uniform" and dev_tasks:
        soup_dev = score(dev_tasks, mean)
    soup_eval = score(eval_tasks, mean)
    report = {
        "method": method,
        "ingredients": entries,
        "num_kept": count,
        "soup": {"dev": soup_dev if dev_tasks else None, "eval": soup_eval},
        "dev_tasks": {g: [t.name for t in ts] for g, ts in dev_tasks.groups.items()},
        "eval_tasks": {g: [t.name for t in ts] for g, ts in eval_tasks.groups.items()},
        "warnings": warnings,
        "output": str(output),
    }

    first = ingredients[order[0]]
    step = max(i.step for i in ingredients)
    params = jax.tree.unflatten(_treedef(first), mean)
    meta = {
        "soup": {"method": method, "ingredients": [e["step_dir"] for e in entries if e.get("kept")]}
    }
    checkpoint.save_params(
        partial,
        step,
        params,
        model_info=first.info,
        config=first.config or None,
        tokenizer=checkpoint.find_tokenizer(first.step_dir, first.info),
        meta=meta,
    )
    report["wall_s"] = round(time.perf_counter() - start, 2)
    (partial / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if output.exists():  # overwrite: the old soup goes only once the new one is complete
        shutil.rmtree(output)
    os.replace(partial, output)
    log(f"wrote {output} ({count} of {len(ingredients)} ingredients, step {step})")
    return report


def format_report(report: dict) -> str:
    """One row per ingredient and one for the soup: dev and eval scores per task group."""
    cols: list[tuple[str, str]] = []
    for split in ("dev", "eval"):
        groups = report[f"{split}_tasks"]
        cols += [(split, g) for g in groups]
        if len(groups) > 1:
            cols.append((split, "mean"))
    header = ["", *[f"{s}:{g}" for s, g in cols]]
    rows = [header]

    def cells(scores: dict) -> list[str]:
        out = []
        for split, group in cols:
            s = scores.get(split)
            value = None if s is None else (s["mean"] if group == "mean" else s["groups"][group])
            out.append("-" if value is None else f"{value:.4f}")
        return out

    for e in report["ingredients"]:
        mark = "*" if e.get("kept") else " "
        rows.append([f"{mark} {e['step_dir']}", *cells(e)])
    rows.append([f"soup ({report['method']}, {report['num_kept']} kept)", *cells(report["soup"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    )


@cli.command
def main(argv: Sequence[str] | None = None) -> dict:
    parser = cli.ArgumentParser(
        prog="python -m embeddinggemma_jax.soup",
        description="Average the parameters of training runs into one checkpoint (a model soup).",
    )
    parser.add_argument("ingredients", nargs="+", help="training workdirs or step folders")
    parser.add_argument("--output", required=True, help="the soup's run directory (new)")
    parser.add_argument("--method", choices=METHODS, default="uniform")
    parser.add_argument(
        "--dev_tasks",
        default="",
        help="held-out dev tasks, GROUP=TASK,... (greedy selects by their mean over groups)",
    )
    parser.add_argument("--eval_tasks", default="", help="tasks only reported, GROUP=TASK,...")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    dev = GroupedTasks(parse_task_groups(args.dev_tasks, "--dev_tasks"), "--dev_tasks")
    test = GroupedTasks(parse_task_groups(args.eval_tasks, "--eval_tasks"), "--eval_tasks")
    report = make_soup(
        args.ingredients,
        args.output,
        method=args.method,
        dev_tasks=dev,
        eval_tasks=test,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
    )
    if dev or test:
        print(format_report(report))
    return report


if __name__ == "__main__":
    main()
