"""The EmbeddingGemma recipe end to end: one command runs the paper's stages in order.

    python -m embeddinggemma_jax.recipe --config=configs/recipe.py:quickstart \
        --workdir=runs/quickstart [--stage=NAME]

Stages (each writes ``<workdir>/<stage>/`` and reads the earlier stages' Orbax checkpoints):

    data                the mixture's datasets (`data.build`), a tokenizer, the LM text
    causal_lm           a decoder-only Gemma 3 trained as a causal LM on that text
    ul2                 T5Gemma encoder-decoder adaptation with UL2, from the causal LM
    prefinetune         contrastive pre-finetuning on pairs, large batch, from the UL2 encoder
    prefinetune_random  the same from random weights (the initialisation ablation)
    search              mixture search (`tune`): short finetunes on Dirichlet + BO mixtures
    finetune            one finetune per selected mixture, with hard negatives
    soup                the uniform average of the finetunes (`soup`)
    qat                 quantization-aware training of the soup, one run per scheme
    export              GGUF (f32, q8_0, q4_0) and a sentence-transformers folder (mixed)
    report              held-out scores of every stage, the paper's claims checked:
                        <workdir>/report.json, report.md, *.png

A stage is complete when its ``stage.json`` exists (written last, atomically); a rerun skips
complete stages, so a killed recipe continues where it stopped (a stage that was running resumes
from its own checkpoints). ``--stage`` runs one stage, once the stages it reads are complete: how
each stage runs on its own TPU slice (launch/README.md). ``config.start`` names the first stage
trained here (``config.init_from`` is its starting checkpoint; the stages before it are not run).
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from embeddinggemma_jax.cache import write_atomic
from embeddinggemma_jax.errors import LocatedError, UserError

STAGES = (
    "data",
    "causal_lm",
    "ul2",
    "prefinetune",
    "prefinetune_random",
    "search",
    "finetune",
    "soup",
    "qat",
    "export",
    "report",
)
TRAINED = ("causal_lm", "ul2", "prefinetune")  # where config.start may point
DONE = "stage.json"
TEXT = "text.jsonl"


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


class Recipe:
    """The pipeline over one workdir: which stages run, what each wrote (`done`)."""

    def __init__(self, config, workdir: str | os.PathLike, log: Callable[[str], None] = print):
        self.config = config
        self.workdir = Path(workdir).absolute()
        self.log = log
        start = str(config.start)
        if start not in TRAINED:
            raise LocatedError(f"must be one of {TRAINED}, got {start!r}", where="config.start")
        if start != TRAINED[0] and not config.init_from:
            raise LocatedError(
                f"config.start={start!r} needs the checkpoint it starts from",
                where="config.init_from",
            )
        skipped = TRAINED[: TRAINED.index(start)]
        self.stages = [
            s
            for s in STAGES
            if s not in skipped and (s != "prefinetune_random" or config.ablation.enabled)
        ]
        if start == "prefinetune" and "prefinetune_random" in self.stages:
            self.stages.remove("prefinetune_random")  # its shape would come from a stage not run

    # -- bookkeeping ----------------------------------------------------------------------------
    def dir(self, stage: str) -> Path:
        return self.workdir / stage

    def done(self, stage: str) -> dict | None:
        f = self.dir(stage) / DONE
        return json.loads(f.read_text()) if f.is_file() else None

    def output(self, stage: str) -> dict:
        """What a complete earlier stage wrote (its stage.json "outputs")."""
        done = self.done(stage)
        if done is None:
            raise UserError(
                f"{self.dir(stage)}: stage {stage!r} is not complete; run it first "
                f"(--stage={stage}, or the whole recipe without --stage)"
            )
        return done["outputs"]

    def init_of(self, stage: str) -> str:
        """The checkpoint `stage` starts from: config.init_from for the start stage, else the
        previous trained stage's run."""
        if stage == self.config.start:
            return str(self.config.init_from)
        previous = TRAINED[TRAINED.index(stage) - 1]
        return self.output(previous)["run"]

    # -- running --------------------------------------------------------------------------------
    def run(self, only: str | None = None) -> dict | None:
        if only is not None and only not in self.stages:
            raise LocatedError(
                f"unknown stage {only!r}; one of {', '.join(self.stages)}", where="--stage"
            )
        start = time.perf_counter()
        todo = [only] if only else self.stages
        expected = {s: float(self.config.expected_s.get(s, 60.0)) for s in todo}
        ratio, spent_expected = 1.0, 0.0
        for i, stage in enumerate(todo, 1):
            head = f"[{i}/{len(todo)}] {stage:<18}"
            if self.done(stage) is not None:
                self.log(f"{head} complete, skipped")
                continue
            remaining = sum(expected[s] for s in todo[i - 1 :] if self.done(s) is None) * ratio
            self.log(
                f"{head} running   (recipe {_fmt_s(time.perf_counter() - start)}, "
                f"ETA {_fmt_s(remaining)})"
            )
            t0 = time.perf_counter()
            self.dir(stage).mkdir(parents=True, exist_ok=True)
            outputs = STAGE_FUNCTIONS[stage](self)
            wall = time.perf_counter() - t0
            record = {"stage": stage, "wall_s": round(wall, 1), "outputs": outputs}
            write_atomic(self.dir(stage) / DONE, json.dumps(record, indent=2) + "\n")
            spent_expected += expected[stage]
            ratio = max(0.2, (time.perf_counter() - start) / max(spent_expected, 1.0))
            self.log(
                f"{head} done in {_fmt_s(wall)} (recipe {_fmt_s(time.perf_counter() - start)})"
            )
        report = self.done("report")
        return report["outputs"] if report else None

    # -- shared pieces of the stages ------------------------------------------------------------
    def train(self, config, run_dir: Path) -> dict:
        """Trains (or resumes) `config` in `run_dir`; returns the last logged train metrics."""
        from embeddinggemma_jax.train.trainer import Trainer

        trainer = Trainer(config, run_dir)
        summary = trainer.fit()
        trainer.close()
        if summary["preempted"]:
            raise Preempted(f"{run_dir}: stopped by SIGTERM at step {summary['step']}")
        train = [h for h in summary["history"].get("train", []) if "loss" in h]
        last = {k: float(v) for k, v in (train[-1] if train else {}).items()
                if k != "step" and isinstance(v, (int, float))}  # fmt: skip
        return {"run": str(run_dir), "step": summary["step"], "train": last}

    def contrastive(self, template, datasets: Sequence[Mapping] | None = None):
        """A contrastive stage's config: the data stage's datasets (paths, weights)."""
        data = self.output("data")
        c = copy.deepcopy(template)
        with c.unlocked():
            entries = []
            for d in datasets if datasets is not None else c.data.datasets:
                d = dict(d)
                d["path"] = data["datasets"][d["name"]]["train"]
                entries.append(d)
            c.data.datasets = entries
            c.eval.task = ""  # the report scores every stage on the same held-out tasks
        return c

    def groups(self, split: str) -> dict[str, list[str]]:
        """{task group: [task folder, ...]} of the datasets' `split` ("dev" or "test")."""
        out: dict[str, list[str]] = {}
        for d in self.output("data")["datasets"].values():
            if d[split]:
                out.setdefault(d["group"], []).append(d[split])
        return out

    def task_spec(self, split: str) -> str:
        """`groups` in the command-line form ``group=task,...`` (`grouped_eval`)."""
        return ",".join(f"{g}={t}" for g, ts in self.groups(split).items() for t in ts)


class Preempted(Exception):
    """A stage's training was stopped by SIGTERM (it saved first); the CLI exits with 143."""


# -------------------------------------------------------------------------------------------------
# The stages: each takes the Recipe, returns its outputs (JSON-able), and may be rerun after a kill.


def _use_tokenizer(c, tokenizer: str, *, keep_shape: bool) -> None:
    """Points a stage config at the recipe's tokenizer; a stage that starts from a checkpoint
    takes the model's shape and tokenizer from it instead."""
    from embeddinggemma_jax.train.contrastive import SHAPE_FIELDS

    with c.unlocked():
        c.tokenizer = tokenizer if keep_shape else ""
        if not keep_shape:
            for field in SHAPE_FIELDS:
                if field in c.model:
                    c.model[field] = None


def stage_data(r: Recipe) -> dict:
    from embeddinggemma_jax import readers
    from embeddinggemma_jax.data import build as data_build
    from embeddinggemma_jax.data import mixtures
    from embeddinggemma_jax.tune import train_tokenizer

    d = r.config.data
    built = data_build.build(
        [*d.build, *d.eval_only],
        d.output or None,
        max_records=d.max_records,
        max_eval_records=d.max_eval_records,
        seed=int(d.seed),
        progress=bool(d.progress),
    )
    datasets = {
        name: {
            "group": mixtures.task_group(name) or name,
            "train": str(p.train),
            "dev": str(p.dev_task) if p.dev_task else "",
            "test": str(p.test_task) if p.test_task else "",
        }
        for name, p in built.items()
        if name in d.build
    }
    # The evaluation-only builds' task folders, by task name (the report's extra tasks).
    eval_tasks = {
        task.name: str(task)
        for name in d.eval_only
        for task in sorted(built[name].root.iterdir())
        if task.is_dir()
    }
    tokenizer = str(d.tokenizer) or str(
        train_tokenizer([v["train"] for v in datasets.values()], int(d.tokenizer_vocab))
    )
    # The language-model stages' text: queries and positives of every training split, shuffled
    # (the same real text the later stages pair up), capped per dataset.
    texts = []
    for v in datasets.values():
        rows = [x for _, x in readers.read_jsonl(v["train"])][: int(d.text_records_per_dataset)]
        texts += [t for row in rows for t in (row.get("query"), row.get("positive")) if t]
    random.Random(int(d.seed)).shuffle(texts)
    text = r.dir("data") / TEXT
    write_atomic(text, "".join(json.dumps({"text": t}) + "\n" for t in texts))
    return {"datasets": datasets, "eval_tasks": eval_tasks, "tokenizer": tokenizer,
            "text": str(text), "texts": len(texts)}  # fmt: skip


def _lm_stage(r: Recipe, stage: str) -> dict:
    data = r.output("data")
    c = copy.deepcopy(r.config[stage])
    init = r.init_of(stage)
    with c.unlocked():
        c.init_from = init
        c.tokenizer = data["tokenizer"]
        c.train_data = data["text"]
    return r.train(c, r.dir(stage) / "run")


def stage_causal_lm(r: Recipe) -> dict:
    return _lm_stage(r, "causal_lm")


def stage_ul2(r: Recipe) -> dict:
    return _lm_stage(r, "ul2")


def stage_prefinetune(r: Recipe) -> dict:
    c = r.contrastive(r.config.prefinetune)
    _use_tokenizer(c, r.output("data")["tokenizer"], keep_shape=False)
    with c.unlocked():
        c.init_from = r.init_of("prefinetune")
    return r.train(c, r.dir("prefinetune") / "run")


def stage_prefinetune_random(r: Recipe) -> dict:
    """Pre-finetuning from random weights of exactly the UL2-initialised model's shape (its
    layer pattern, and its embedding table with the UL2 sentinel rows)."""
    from embeddinggemma_jax import checkpoint
    from embeddinggemma_jax.train.contrastive import SHAPE_FIELDS

    c = r.contrastive(r.config.prefinetune)
    _use_tokenizer(c, r.output("data")["tokenizer"], keep_shape=True)
    _, info = checkpoint.load_model_info(r.output("prefinetune")["run"])
    shape = checkpoint._model_config(info)
    with c.unlocked():
        c.init_from = ""
        for k in SHAPE_FIELDS:
            c.model[k] = getattr(shape, k)
    return r.train(c, r.dir("prefinetune_random") / "run")


def _search_config(r: Recipe):
    s = copy.deepcopy(r.config.search)
    with s.unlocked():
        s.train = r.contrastive(s.train)
        _use_tokenizer(s.train, "", keep_shape=False)
        s.train.init_from = r.output("prefinetune")["run"]
        s.search.build = ()  # the data stage built them
        s.search.base_steps = 0
        s.search.tokenizer_vocab = 0
        s.search.dev_tasks = r.task_spec("dev")
        s.search.test_tasks = r.task_spec("test")
    return s


def stage_search(r: Recipe) -> dict:
    from embeddinggemma_jax import tune

    summary = tune.search(_search_config(r), r.dir("search") / "study")
    by_slot = {t["slot"]: t for t in summary["trials"]}
    top = [by_slot[s]["weights"] for s in summary["top"]]
    trials = [
        {"slot": t["slot"], "kind": t["kind"], "weights": t["weights"], "dev": t["objective"]}
        for t in summary["trials"]
    ]
    return {"trials": trials, "top": top, "top_slots": summary["top"]}


def stage_finetune(r: Recipe) -> dict:
    from embeddinggemma_jax.data import mixtures

    s = _search_config(r)
    runs = []
    for i, weights in enumerate(r.output("search")["top"]):
        c = copy.deepcopy(s.train)
        with c.unlocked():
            c.data.datasets = mixtures.with_weights(list(c.data.datasets), weights)
            c.num_steps = int(r.config.finetune.num_steps)
            c.data.global_batch_size = int(r.config.finetune.global_batch_size)
            c.optimizer.learning_rate = float(r.config.finetune.learning_rate)
        out = r.train(c, r.dir("finetune") / f"{i:02d}")
        runs.append({**out, "weights": weights})
    return {"runs": runs}


def stage_soup(r: Recipe) -> dict:
    from embeddinggemma_jax.soup import make_soup

    paths = [x["run"] for x in r.output("finetune")["runs"]]
    out = r.dir("soup") / "run"
    make_soup(paths, out, method=str(r.config.soup.method), overwrite=True, progress=False,
              log=lambda _: None)  # fmt: skip
    return {"run": str(out), "ingredients": paths}


def stage_qat(r: Recipe) -> dict:
    soup = r.output("soup")["run"]
    runs = {}
    for scheme in r.config.qat.schemes:
        c = r.contrastive(r.config.qat.train)
        _use_tokenizer(c, "", keep_shape=False)
        with c.unlocked():
            c.init_from = soup
            c.teacher.path = soup  # the float starting model is the teacher
            c.model.quant = scheme
        runs[scheme] = r.train(c, r.dir("qat") / scheme)
    return {"runs": runs}


def stage_export(r: Recipe) -> dict:
    from embeddinggemma_jax.export import export

    qat = r.output("qat")["runs"]
    soup = r.output("soup")["run"]
    files = {}
    for spec in r.config.export.formats:
        to, _, quant = spec.partition(":")
        model = qat[quant]["run"] if quant in qat else soup
        suffix = ".gguf" if to == "gguf" else ""
        out = r.dir("export") / f"model-{quant}{suffix}"
        export(model, to, quant, out, progress=False)
        size = (
            out.stat().st_size
            if out.is_file()
            else sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        )
        files[spec] = {"path": str(out), "from": model, "bytes": size}
    return {"files": files}


def stage_report(r: Recipe) -> dict:
    from embeddinggemma_jax import recipe_report

    report = recipe_report.build_report(r)
    recipe_report.write_report(report, r.workdir)
    return report


STAGE_FUNCTIONS: dict[str, Callable[[Recipe], dict]] = {
    "data": stage_data,
    "causal_lm": stage_causal_lm,
    "ul2": stage_ul2,
    "prefinetune": stage_prefinetune,
    "prefinetune_random": stage_prefinetune_random,
    "search": stage_search,
    "finetune": stage_finetune,
    "soup": stage_soup,
    "qat": stage_qat,
    "export": stage_export,
    "report": stage_report,
}


# -------------------------------------------------------------------------------------------------
# Command line


def run(config, workdir: str | os.PathLike, stage: str | None = None, log=print) -> dict | None:
    """Runs the recipe (or one stage) in `workdir`; returns the report once it exists."""
    return Recipe(config, workdir, log=log).run(stage)


def main(argv) -> None:
    from absl import app, flags
    from absl import logging as absl_logging

    from embeddinggemma_jax.cache import enable_compilation_cache

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax's INFO chatter
    enable_compilation_cache()
    f = flags.FLAGS
    start = time.perf_counter()
    try:
        report = run(f.config, f.workdir, f.stage)
    except Preempted as e:
        print(f"preempted: {e}; rerun the same command to continue", file=sys.stderr, flush=True)
        sys.exit(143)
    if report is not None and not f.stage:
        from embeddinggemma_jax.recipe_report import format_summary

        print()
        print(format_summary(report, time.perf_counter() - start, f.workdir))


def cli_main(argv=None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from embeddinggemma_jax import cli

    config_flags.DEFINE_config_file(
        "config", None, "recipe config (configs/recipe.py:quickstart|300m)", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "where every stage's run directory goes")
    flags.DEFINE_string("stage", None, f"run only this stage (one of {', '.join(STAGES)})")
    flags.mark_flags_as_required(["config", "workdir"])
    cli.run_absl(main, argv)


if __name__ == "__main__":
    cli_main()
