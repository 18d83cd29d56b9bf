"""Mixture search: Bayesian optimisation of the task-mixture weights (arXiv 2509.20354 §2.3).

    python -m embeddinggemma_jax.tune --config=configs/mixture_search.py --workdir=runs/search \
        [--worker=0 --num_workers=1] [--config.search.num_bo=20 ...]

The config holds the finetuning experiment (``config.train``, any contrastive config) and the
search (``config.search``). Trials, in slot order:

- slot 0: the seed mixture (``config.train.data.datasets``' weights);
- slots 1..N: ``search.num_dirichlet`` Dirichlet(``search.alpha``) samples
  (`data.mixtures.dirichlet_mixtures`, seeded);
- the next ``search.num_bo`` slots: Bayesian optimisation, Optuna's `GPSampler` by ask/tell
  (``search.sampler="tpe"``: `TPESampler`, the fallback where torch is unwanted; GPSampler needs
  torch, installed by the ``tune`` extra), over the cube that `simplex` maps onto the mixtures, so
  the seed and Dirichlet trials are points the optimiser knows.

Each trial is a short finetune of ``config.train`` with the trial's weights (from
``config.train.init_from``, or from a shared base run trained first in ``<workdir>/base`` when
``search.base_steps`` > 0 and there is no init_from) in ``<workdir>/trials/<slot>``, then its
score on held-out **dev** tasks (``search.dev_tasks``, grouped by task group; never a test split):
the objective is the mean over groups of each group's mean main score (`grouped_eval`).

Resuming: the study is an Optuna journal (``<workdir>/journal.log``, a file backend; workers
coordinate through ``<workdir>/search.lock``). A restarted worker marks its own trials that were
left running as failed and redoes them with the same weights, resuming the trial's own training
from its checkpoint; finished trials are never redone. Each worker (``--worker=i
--num_workers=n``, e.g. one per TPU slice, sharing the workdir on a common file system) runs one
trial at a time, always the lowest slot nobody has finished or is running, so a search's slots and
their weights do not depend on how many workers ran it; a BO slot's sampler is seeded by the
slot.

Outputs (rewritten after every trial, under temporary names): ``trials.json`` (every trial:
slot, kind, weights, score per task group and task, objective, run directory), ``trials.txt``
(the same as a table), ``trials.png`` (score vs trial), and ``top/<rank>`` links to the top-k
trials' run directories, ready for ``python -m embeddinggemma_jax.soup <workdir>/top/*``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from embeddinggemma_jax.cache import atomic_path, write_atomic
from embeddinggemma_jax.data import mixtures
from embeddinggemma_jax.errors import LocatedError, UserError
from embeddinggemma_jax.grouped_eval import GroupedTasks, task_groups
from embeddinggemma_jax.simplex import from_cube, to_cube

STUDY = "mixture_search"
JOURNAL = "journal.log"
LOCK = "search.lock"
TRIALS = "trials"
SAMPLERS = ("gp", "tpe")


@contextlib.contextmanager
def _locked(workdir: Path):
    """Exclusive across the workers sharing `workdir` (POSIX advisory lock)."""
    with open(workdir / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# The plan


def dataset_names(train_config) -> list[str]:
    datasets = list(train_config.data.datasets)
    names = list(mixtures.seed_mixture(datasets))
    if len(names) < 2:
        raise LocatedError(
            f"a mixture search needs at least two datasets, got {names}",
            where="config.train.data.datasets",
        )
    return names


def initial_mixtures(config) -> list[tuple[str, dict[str, float]]]:
    """(kind, mixture) of the seed trial and the Dirichlet trials, in slot order."""
    s = config.search
    seed = mixtures.seed_mixture(list(config.train.data.datasets))
    names = list(seed)
    samples = mixtures.dirichlet_mixtures(names, int(s.num_dirichlet), int(s.seed), float(s.alpha))
    return [("seed", seed)] + [("dirichlet", m) for m in samples]


def cube_params(names: Sequence[str], mixture: Mapping[str, float]) -> dict[str, float]:
    return {f"u{i}": u for i, u in enumerate(to_cube([mixture[n] for n in names]))}


def mixture_of(names: Sequence[str], params: Mapping[str, float]) -> dict[str, float]:
    """The trial's mixture: weights from its cube point, kept >= MIN_WEIGHT (normalised)."""
    w = from_cube([params[f"u{i}"] for i in range(len(names) - 1)])
    w = [max(x, mixtures.MIN_WEIGHT) for x in w]
    total = sum(w)
    return {n: x / total for n, x in zip(names, w)}


def _distributions(names):
    import optuna

    return {
        f"u{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(len(names) - 1)
    }


def make_sampler(kind: str, seed: int, n_startup: int):
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
    if kind != "gp":
        raise LocatedError(
            f"unknown sampler {kind!r} (known: {', '.join(SAMPLERS)})",
            where="config.search.sampler",
        )
    try:
        import torch  # noqa: F401  (GPSampler's dependency)
    except ImportError as e:
        raise LocatedError(
            "GPSampler needs torch (pip install 'embeddinggemma-jax[tune]'), or set 'tpe'",
            where="config.search.sampler",
        ) from e
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=n_startup, deterministic_objective=True
    )


# ---------------------------------------------------------------------------------------------
# Datasets and tasks


def prepare(config) -> None:
    """Builds the datasets named in ``search.build`` (`data.build`), points the same-named
    entries of ``train.data.datasets`` at their training splits and, unless ``search.dev_tasks``
    is set, makes their dev splits the dev tasks (grouped by `mixtures.task_group`; the test
    splits go to ``search.test_tasks``, for the soup's report only); trains the tokenizer when
    ``search.tokenizer_vocab`` is set and the run has none. `config` must be unlocked."""
    s, train = config.search, config.train
    names = [str(n) for n in (s.get("build") or ())]
    if names:
        from embeddinggemma_jax.data import build as data_build

        built = data_build.build(
            names,
            s.get("build_output") or None,
            max_records=s.get("build_max_records"),
            max_eval_records=s.get("build_max_eval_records"),
            seed=int(s.get("build_seed") or 0),
        )
        datasets = []
        for d in train.data.datasets:
            d = dict(d)
            if d.get("name") in built:
                d["path"] = str(built[d["name"]].train)
            datasets.append(d)
        train.data.datasets = datasets

        def tasks(attr: str) -> str:
            return ",".join(
                f"{mixtures.task_group(n) or n}={getattr(p, attr)}"
                for n, p in built.items()
                if getattr(p, attr) is not None
            )

        if not s.get("dev_tasks"):
            s.dev_tasks = tasks("dev_task")
        if not s.get("test_tasks"):
            s.test_tasks = tasks("test_task")
    vocab = int(s.get("tokenizer_vocab") or 0)
    if vocab and not train.tokenizer and not train.init_from:
        train.tokenizer = str(train_tokenizer([d["path"] for d in train.data.datasets], vocab))


def train_tokenizer(paths: Sequence[str], vocab_size: int, max_lines: int = 200_000) -> Path:
    """A BPE SentencePiece model on the training splits' texts (cached by their content)."""
    import hashlib
    import random

    from embeddinggemma_jax.checkpoint import file_sha256
    from embeddinggemma_jax.eval import default_cache_dir
    from embeddinggemma_jax.text import DEFAULT_PROMPTS
    from embeddinggemma_jax.text.tokenizer import train_bpe

    key = json.dumps([sorted(file_sha256(p) for p in paths), vocab_size, max_lines, 1])
    out_dir = (
        default_cache_dir() / "search-tokenizer" / hashlib.sha256(key.encode()).hexdigest()[:12]
    )
    model = out_dir / "tokenizer.model"
    if model.is_file():
        return model
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [p.strip() for p in DEFAULT_PROMPTS.values()] + ["title: none | text:"]
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for raw in f:
                r = json.loads(raw)
                lines += [r["query"], *(x for x in r["positive"].split("\n") if x.strip())]
    random.Random(0).shuffle(lines)
    corpus = out_dir / f"corpus-{os.getpid()}.txt"
    corpus.write_text("\n".join(lines[:max_lines]) + "\n", encoding="utf-8")
    trained = train_bpe(
        corpus,
        out_dir / f"tmp-{os.getpid()}",
        vocab_size,
        byte_fallback=True,
        user_defined_symbols=["\u2581" * 8, "\u2581" * 4],
        character_coverage=0.9995,
        num_threads=os.cpu_count() or 1,
    )
    os.replace(trained, model)
    corpus.unlink()
    Path(str(trained)[: -len(".model")] + ".vocab").unlink(missing_ok=True)
    return model


# ---------------------------------------------------------------------------------------------
# One trial


def _trial_config(config, mixture: Mapping[str, float], init_from: str | None):
    train = copy.deepcopy(config.train)
    with train.unlocked():
        train.data.datasets = mixtures.with_weights(list(train.data.datasets), mixture)
        if init_from and not train.init_from:  # the shared base run: shape and tokenizer are its
            from embeddinggemma_jax.train.contrastive import SHAPE_FIELDS

            train.init_from = init_from
            train.tokenizer = ""
            for field in SHAPE_FIELDS:
                if field in train.model:
                    train.model[field] = None
        train.eval.task = ""  # the search scores dev itself, once, at the end
    return train


def _train(config, workdir: Path):
    from embeddinggemma_jax.train.trainer import Trainer

    trainer = Trainer(config, workdir)
    summary = trainer.fit()
    trainer.close()
    if summary["preempted"]:  # SIGTERM: the trial's run saved; the restarted search resumes it
        raise Preempted(f"{workdir}: stopped by SIGTERM at step {summary['step']}")
    return trainer


class Preempted(Exception):
    """A trial's training was stopped by SIGTERM (it saved first); the CLI exits with 143."""


_EMBEDDERS: dict = {}


def run_trial(
    config, slot: int, mixture: Mapping[str, float], workdir: Path, dev: GroupedTasks, init_from
):
    """Trains (or resumes) the trial in ``trials/<slot>`` and scores it on dev; returns the result."""
    run_dir = workdir / TRIALS / f"{slot:03d}"
    result_file = run_dir / "trial.json"
    if result_file.is_file():  # finished, but killed before the journal heard of it
        done = json.loads(result_file.read_text())
        if done.get("weights") == dict(mixture):
            return done
    start = time.perf_counter()
    trainer = _train(_trial_config(config, mixture, init_from), run_dir)
    from embeddinggemma_jax.embedder import Embedder
    from embeddinggemma_jax.train.contrastive import local_copy

    task = trainer.task
    max_length = max(task.data_config.query_max_length, task.data_config.doc_max_length)
    key = (
        task.model_config,
        str(task.tokenizer.path),
        max_length,
        tuple(sorted(task.prompts.items())),
    )
    params = local_copy(trainer.state.params)
    embedder = _EMBEDDERS.get(key)
    if embedder is None:  # one per model shape: its compiled programs serve every trial
        embedder = Embedder(
            task.model_config,
            params,
            task.tokenizer,
            prompts=task.prompts,
            max_length=max_length,
            pack_length=None,  # padded buckets: a few shapes to compile, not one per packing
        )
        _EMBEDDERS.clear()
        _EMBEDDERS[key] = embedder
    embedder.params = params
    scores = dev.score(embedder, int(config.search.eval_batch_size))
    result = {
        "slot": slot,
        "weights": dict(mixture),
        "dev": scores,
        "objective": scores["mean"],
        "run_dir": str(run_dir),
        "steps": trainer.num_steps,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_atomic(result_file, json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# The search


def _open_study(workdir: Path, sampler):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(workdir / JOURNAL)
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return optuna.create_study(
        storage=storage,
        study_name=STUDY,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )


def _slots(study) -> dict[int, list]:
    out: dict[int, list] = {}
    for t in study.get_trials(deepcopy=False):
        if "slot" in t.user_attrs:
            out.setdefault(int(t.user_attrs["slot"]), []).append(t)
    return out


def _next_trial(study, config, names, plan, worker: int):
    """Under the lock: reclaims this worker's stale trials, picks the lowest open slot and asks
    Optuna for its trial (the planned point, the failed attempt's point, or a BO suggestion)."""
    from optuna.trial import TrialState

    slots = _slots(study)
    for attempts in slots.values():
        for t in attempts:
            if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == worker:
                logging.warning(
                    "trial %d (slot %s) was left running by a killed worker %d: redoing it",
                    t.number,
                    t.user_attrs["slot"],
                    worker,
                )
                study.tell(t.number, state=TrialState.FAIL)
    slots = _slots(study)
    total = len(plan) + int(config.search.num_bo)
    for slot in range(total):
        states = {t.state for t in slots.get(slot, [])}
        if TrialState.COMPLETE in states or TrialState.RUNNING in states:
            continue
        dist = _distributions(names)
        if slot < len(plan):
            kind, params = plan[slot][0], cube_params(names, plan[slot][1])
        elif slot in slots:  # a failed BO attempt: the same point again
            kind, params = "bo", dict(slots[slot][0].params)
        else:
            kind, params = "bo", None
        if params is not None:
            study.enqueue_trial(params, user_attrs={"slot": slot, "kind": kind})
        else:
            study.sampler = make_sampler(
                config.search.sampler, int(config.search.seed) * 100_003 + slot, len(plan)
            )
        trial = study.ask(dist)
        trial.set_user_attr("slot", slot)
        trial.set_user_attr("kind", kind)
        trial.set_user_attr("worker", worker)
        return slot, kind, trial
    return None


def _base_run(config, workdir: Path) -> str | None:
    """The shared starting checkpoint: config.train.init_from, or a base run trained here once."""
    steps = int(config.search.get("base_steps") or 0)
    if config.train.init_from or not steps:
        return str(config.train.init_from) or None
    base_dir = workdir / "base"
    train = copy.deepcopy(config.train)
    with train.unlocked():
        train.num_steps = steps
        train.eval.task = ""
    from embeddinggemma_jax import checkpoint

    done = (
        checkpoint.is_checkpoint(base_dir)
        and int(checkpoint.resolve_step_dir(base_dir).name) >= steps
    )
    if not done:
        logging.info("training the shared base run (%d steps) in %s", steps, base_dir)
        _train(train, base_dir)
    return str(base_dir)


def search(config, workdir: str | os.PathLike, *, worker: int = 0, num_workers: int = 1) -> dict:
    """Runs this worker's share of the search; returns the summary (`summarize`)."""
    if not 0 <= worker < num_workers:
        raise LocatedError(f"must be in 0..{num_workers - 1}, got {worker}", where="--worker")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(config)
    with config.unlocked():
        prepare(config)
    names = dataset_names(config.train)
    plan = initial_mixtures(config)
    dev = GroupedTasks(
        task_groups(config.search.dev_tasks, "config.search.dev_tasks"), "config.search.dev_tasks"
    )
    if not dev:
        raise LocatedError("no dev tasks to score the trials with", where="config.search.dev_tasks")
    with _locked(workdir):
        study = _open_study(
            workdir, make_sampler(config.search.sampler, int(config.search.seed), len(plan))
        )
        init_from = _base_run(config, workdir)
        _check_same_search(study, config, names)
    while True:
        with _locked(workdir):
            picked = _next_trial(study, config, names, plan, worker)
        if picked is None:
            break
        slot, kind, trial = picked
        mixture = mixture_of(names, trial.params)
        trial.set_user_attr("weights", mixture)
        shown = ", ".join(f"{n}={w:.3f}" for n, w in mixture.items())
        print(f"trial slot {slot} ({kind}, worker {worker}): {shown}", flush=True)
        result = run_trial(config, slot, mixture, workdir, dev, init_from)
        trial.set_user_attr("dev", result["dev"])
        trial.set_user_attr("run_dir", result["run_dir"])
        study.tell(trial, result["objective"])
        print(
            f"trial slot {slot}: dev {result['objective']:.4f} {result['dev']['groups']}",
            flush=True,
        )
        with _locked(workdir):
            summarize(study, workdir, names, config.search)
    with _locked(workdir):
        return summarize(study, workdir, names, config.search)


def _check_same_search(study, config, names) -> None:
    """The journal belongs to this search (same datasets); refuses to mix two searches."""
    recorded = study.user_attrs.get("datasets")
    if recorded is None:
        study.set_user_attr("datasets", list(names))
    elif list(recorded) != list(names):
        raise UserError(
            f"{study.study_name}: this workdir's search is over the datasets {recorded}, not {names} "
            "(use a new --workdir)"
        )


# ---------------------------------------------------------------------------------------------
# Reports


def trial_rows(study) -> list[dict]:
    """One row per finished slot, in slot order."""
    from optuna.trial import TrialState

    rows = []
    for slot, attempts in sorted(_slots(study).items()):
        done = [t for t in attempts if t.state == TrialState.COMPLETE]
        if not done:
            continue
        t = done[0]
        rows.append(
            {
                "slot": slot,
                "kind": t.user_attrs.get("kind"),
                "weights": t.user_attrs["weights"],
                "objective": t.value,
                "dev": t.user_attrs.get("dev"),
                "run_dir": t.user_attrs.get("run_dir"),
                "attempts": len(attempts),
                "optuna_trial": t.number,
            }
        )
    return rows


def format_table(rows: Sequence[dict], names: Sequence[str]) -> str:
    groups = list(rows[0]["dev"]["groups"]) if rows else []
    header = ["slot", "kind", *names, *[f"dev:{g}" for g in groups], "objective"]
    table = [header]
    for r in rows:
        table.append(
            [
                str(r["slot"]),
                r["kind"],
                *[f"{r['weights'][n]:.3f}" for n in names],
                *[f"{r['dev']['groups'][g]:.4f}" for g in groups],
                f"{r['objective']:.4f}",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table)


def plot_trials(rows: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs = [r["slot"] for r in rows]
    for g in rows[0]["dev"]["groups"]:
        ax.plot(xs, [r["dev"]["groups"][g] for r in rows], "o", alpha=0.6, label=f"dev {g}")
    ys = [r["objective"] for r in rows]
    ax.plot(xs, ys, "ks-", label="objective (mean over groups)")
    best = [max(ys[: i + 1]) for i in range(len(ys))]
    ax.plot(xs, best, "r--", label="best so far")
    ax.set_xlabel("trial (slot)")
    ax.set_ylabel("dev main score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")  # the temporary name's suffix is not ".png"
    plt.close(fig)


def summarize(study, workdir: Path, names: Sequence[str], search_config) -> dict:
    """Writes trials.json / trials.txt / trials.png and the top/<rank> links; returns the summary."""
    rows = trial_rows(study)
    top_k = max(0, int(search_config.top_k))
    ranked = sorted(rows, key=lambda r: (-r["objective"], r["slot"]))[:top_k]
    summary = {
        "datasets": list(names),
        "trials": rows,
        "top": [r["slot"] for r in ranked],
        "dev_tasks": str(search_config.dev_tasks),
        "test_tasks": str(search_config.get("test_tasks") or ""),
    }
    write_atomic(workdir / "trials.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(workdir / "trials.txt", format_table(rows, names) + "\n")
    if rows:
        plot_trials(rows, workdir / "trials.png")
    top = workdir / "top"
    top.mkdir(exist_ok=True)
    for link in top.iterdir():
        link.unlink()
    for rank, r in enumerate(ranked, 1):
        os.symlink(os.path.relpath(r["run_dir"], top), top / str(rank))
    return summary


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv) -> None:
    from absl import flags

    del argv
    from embeddinggemma_jax.cache import enable_compilation_cache

    enable_compilation_cache()
    f = flags.FLAGS
    try:
        summary = search(f.config, f.workdir, worker=f.worker, num_workers=f.num_workers)
    except Preempted as e:
        print(f"preempted: {e}", flush=True)
        sys.exit(143)
    rows = summary["trials"]
    print(format_table(rows, summary["datasets"]))
    if rows:
        best = max(rows, key=lambda r: r["objective"])
        print(f"best: slot {best['slot']} dev {best['objective']:.4f}; top {summary['top']}")
        top = Path(f.workdir) / "top"
        evals = f" --eval_tasks={summary['test_tasks']}" if summary["test_tasks"] else ""
        print(
            f"soup: python -m embeddinggemma_jax.soup {top}/* --output={Path(f.workdir) / 'soup'}"
            f" --dev_tasks={summary['dev_tasks']}{evals}"
        )


def run() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "search config (configs/mixture_search.py[:tiny])", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "the search's directory (journal, trials, reports)")
    flags.DEFINE_integer("worker", 0, "this worker's index (0..num_workers-1)")
    flags.DEFINE_integer("num_workers", 1, "how many workers share the search")
    flags.mark_flags_as_required(["config", "workdir"])
    from embeddinggemma_jax import cli

    cli.run_absl(main)


if __name__ == "__main__":
    run()
