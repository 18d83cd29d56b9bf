"""The recipe's report: every stage's model scored on the same held-out tasks, the paper's
claims checked at this scale.

Written by the recipe's last stage to ``<workdir>/report.json`` (schema below), ``report.md`` and
``report_*.png``::

    {"before": {metric: value}, "after": {metric: value},    # headline: untrained vs final
     "stages": {name: {"wall_s", "scores": {task: {metric: value}}}},
     "soup": {"ingredients": [...], "soup": {...}, "best_ingredient": ...},
     "quant": {scheme: {"float": {...}, "ptq": {...}, "qat": {...}, "gguf_bytes": ...}},
     "mrl": {"model": "soup", "dims": {dim: {"mean": x, task: x}}},
     "ablation": {"ul2_init": {...}, "random_init": {...}},
     "claims": [{"claim", "holds", "evidence"}], "wall_s": ...}

Scores are test splits only (the search and the soup never see them). A model's "mean" is the
mean over task groups of the groups' mean main score (nDCG@10 for retrieval) at the model's full
width, as the mixture search scores dev; the other task types (STS, classification) are reported
per task.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embeddinggemma_jax.tables import format_table

RETRIEVAL_METRICS = ("ndcg_at_10", "recall_at_10")


class _Models:
    """Embedders for checkpoints of one tokenizer: one per model shape and quant scheme, its
    compiled programs reused by every checkpoint of that shape (the params are swapped)."""

    def __init__(self, max_length: int | None):
        self.max_length = max_length
        self._embedders: dict = {}

    def load(self, path: str, quant: str | None = None):
        from embeddinggemma_jax import checkpoint

        cfg, params, tokenizer, prompts = checkpoint.load_for_inference(path)
        return self.embedder(cfg, params, str(tokenizer), prompts, quant)

    def embedder(self, cfg, params, tokenizer: str, prompts: Mapping, quant: str | None):
        import jax

        from embeddinggemma_jax.checkpoint import file_sha256
        from embeddinggemma_jax.embedder import Embedder
        from embeddinggemma_jax.text import Tokenizer

        cfg = dataclasses.replace(cfg, quant=quant, scan_layers=False)
        # By content: every run folder holds its own copy of the one tokenizer.
        key = (cfg, file_sha256(tokenizer), tuple(sorted(prompts.items())))
        e = self._embedders.get(key)
        if e is None:
            e = Embedder(cfg, params, Tokenizer(tokenizer), prompts=dict(prompts),
                         max_length=min(self.max_length or cfg.max_length, cfg.max_length),
                         pack_length=None, full_batches=True)  # fmt: skip
            self._embedders[key] = e
        else:
            e.params = jax.device_put(params)
        return e


def _scores(embedder, tasks: Sequence, dims: Sequence[int], batch_size: int) -> dict:
    """{task: {dim: {metric: value, "main_score": value}}} (dims as strings, as JSON keeps them)."""
    from embeddinggemma_jax.eval.runner import evaluate_embedder

    rep = evaluate_embedder(embedder, tasks, dims, batch_size=batch_size, log=None)
    keep = (*RETRIEVAL_METRICS, "main_score")
    return {
        name: {d: {k: float(v) for k, v in res.items() if k in keep or k == t["main_score"]}
               for d, res in t["results"].items()}
        for name, t in rep["tasks"].items()
    }  # fmt: skip


def group_mean(scores: Mapping, groups: Mapping[str, Sequence[str]], dim: int | str) -> float:
    """Mean over groups of the groups' mean main score at `dim`."""
    per_group = [np.mean([scores[t][str(dim)]["main_score"] for t in ts]) for ts in groups.values()]
    return float(np.mean(per_group))


def _at(scores: Mapping, dim) -> dict:
    """{task: {metric: value}} at one width."""
    return {t: dict(by_dim[str(dim)]) for t, by_dim in scores.items()}


def _claim(claim: str, holds: bool, evidence: str) -> dict:
    return {"claim": claim, "holds": bool(holds), "evidence": evidence}


def build_report(r) -> dict:
    """Scores every stage's model (see the module docstring); `r` is the `recipe.Recipe`."""
    import jax

    from embeddinggemma_jax.eval.registry import get_task
    from embeddinggemma_jax.model.model import init_params

    cfg = r.config.report
    batch = int(cfg.batch_size)
    models = _Models(cfg.max_length)
    # The task folders' names: group -> [task name] (for the means), and the tasks, loaded once.
    test_groups = r.groups("test")
    loaded, groups, name_of = [], {}, {}
    for group, specs in test_groups.items():
        for spec in specs:
            task = get_task(spec)
            loaded.append(task)
            groups.setdefault(group, []).append(task.name)
            name_of[spec] = task.name
    data = r.output("data")
    extra = [get_task(data["eval_tasks"].get(name, name)) for name in cfg.extra_tasks]
    tasks = loaded + extra

    from embeddinggemma_jax import checkpoint

    # The soup is read once: it is scored in float, fake-quantized per scheme (PTQ), and its
    # shape and tokenizer give the untrained model.
    soup_cfg, soup_params, soup_tokenizer, soup_prompts = checkpoint.load_for_inference(
        r.output("soup")["run"]
    )

    def soup_as(params, quant: str | None):
        return models.embedder(soup_cfg, params, str(soup_tokenizer), soup_prompts, quant)

    full = soup_cfg.output_dim
    dims = sorted({full, *soup_cfg.matryoshka_dims}, reverse=True)

    def score(embedder, all_dims=False) -> dict:
        return _scores(embedder, tasks, dims if all_dims else [full], batch)

    scored: dict[str, dict] = {}
    untrained = init_params(dataclasses.replace(soup_cfg, quant=None), jax.random.PRNGKey(0))
    scored["untrained"] = score(soup_as(untrained, None))
    for stage in ("prefinetune", "prefinetune_random"):
        if stage in r.stages:
            scored[stage] = score(models.load(r.output(stage)["run"]))
    finetunes = r.output("finetune")["runs"]
    for i, run in enumerate(finetunes):
        scored[f"finetune/{i:02d}"] = score(models.load(run["run"]))
    scored["soup"] = score(soup_as(soup_params, None), all_dims=True)
    qat_runs = r.output("qat")["runs"]
    for scheme in qat_runs:
        scored[f"ptq/{scheme}"] = score(soup_as(soup_params, scheme), all_dims=True)
        scored[f"qat/{scheme}"] = score(models.load(qat_runs[scheme]["run"], scheme), all_dims=True)

    def mean(name: str, dim=full) -> float:
        return group_mean(scored[name], groups, dim)

    # -- stages ----------------------------------------------------------------------------------
    stages: dict[str, dict] = {}
    for stage in r.stages:
        done = r.done(stage)
        entry: dict[str, Any] = {"wall_s": done["wall_s"] if done else None}
        out = done["outputs"] if done else {}
        if stage in ("causal_lm", "ul2"):
            entry["scores"] = {"train": out.get("train", {})}
        elif stage == "data":
            entry["scores"] = {}
            entry["texts"] = out.get("texts")
        elif stage == "search":
            entry["scores"] = {"dev": {f"trial_{t['slot']}": t["dev"] for t in out["trials"]}}
        elif stage == "finetune":
            names = [f"finetune/{i:02d}" for i in range(len(finetunes))]
            entry["scores"] = _at(scored[names[0]], full) if len(names) == 1 else {
                t: {m: float(np.mean([scored[n][t][str(full)][m] for n in names]))
                    for m in scored[names[0]][t][str(full)]}
                for t in scored[names[0]]
            }  # fmt: skip
            entry["runs"] = {n: {"mean": mean(n)} for n in names}
        elif stage in ("prefinetune", "prefinetune_random", "soup"):
            entry["scores"] = _at(scored[stage], full)
        elif stage == "qat":
            entry["scores"] = {f"{s}/{t}": v for s in qat_runs
                               for t, v in _at(scored[f"qat/{s}"], full).items()}  # fmt: skip
        elif stage == "export":
            entry["scores"] = {}
            entry["files"] = out.get("files", {})
        if stage in scored:
            entry["mean"] = mean(stage)
        stages[stage] = entry

    # -- headline: the untrained model vs the final (float) model on the headline task ------------
    head_name = name_of[data["datasets"][cfg.headline_dataset]["test"]]
    before = {
        m: v for m, v in scored["untrained"][head_name][str(full)].items() if m != "main_score"
    }
    after = {m: v for m, v in scored["soup"][head_name][str(full)].items() if m != "main_score"}

    # -- soup vs ingredients ----------------------------------------------------------------------
    ingredients = [
        {"run": run["run"], "weights": run["weights"], "mean": mean(f"finetune/{i:02d}"),
         "groups": {g: float(np.mean([scored[f"finetune/{i:02d}"][t][str(full)]["main_score"]
                                      for t in ts])) for g, ts in groups.items()}}
        for i, run in enumerate(finetunes)
    ]  # fmt: skip
    best = max(ingredients, key=lambda x: x["mean"])
    soup_section = {
        "method": str(r.config.soup.method),
        "ingredients": ingredients,
        "soup": {"mean": mean("soup"),
                 "groups": {g: float(np.mean([scored["soup"][t][str(full)]["main_score"]
                                              for t in ts])) for g, ts in groups.items()}},
        "best_ingredient": best["run"],
    }  # fmt: skip

    # -- float vs PTQ vs QAT ----------------------------------------------------------------------
    files = r.output("export")["files"] if "export" in r.stages else {}
    quant = {}
    for scheme in qat_runs:
        quant[scheme] = {
            kind: {str(d): {"mean": mean(name, d), **{t: v[str(d)]["main_score"]
                                                      for t, v in scored[name].items()}}
                   for d in dims}
            for kind, name in (("float", "soup"), ("ptq", f"ptq/{scheme}"),
                               ("qat", f"qat/{scheme}"))
        }  # fmt: skip
        gguf = files.get(f"gguf:{scheme}")
        quant[scheme]["gguf_bytes"] = gguf["bytes"] if gguf else None
    if "gguf:f32" in files:
        quant["f32_gguf_bytes"] = files["gguf:f32"]["bytes"]

    # -- Matryoshka --------------------------------------------------------------------------------
    mrl = {
        "model": "soup",
        "dims": {str(d): {"mean": mean("soup", d),
                          **{t: v[str(d)]["main_score"] for t, v in scored["soup"].items()}}
                 for d in dims},
    }  # fmt: skip

    # -- claims -----------------------------------------------------------------------------------
    claims = [
        _claim(
            f"training gains >= 0.2 nDCG@10 on held-out {cfg.headline_dataset} ({head_name})",
            after["ndcg_at_10"] - before["ndcg_at_10"] >= 0.2,
            f"untrained {before['ndcg_at_10']:.4f} -> final {after['ndcg_at_10']:.4f}",
        ),
        _claim(
            "the soup beats every ingredient (Table 4)",
            all(mean("soup") > x["mean"] for x in ingredients),
            f"soup {mean('soup'):.4f} vs ingredients "
            + ", ".join(f"{x['mean']:.4f}" for x in ingredients),
        ),
    ]
    ablation = {}
    if "prefinetune_random" in scored and "prefinetune" in scored:
        ablation = {"ul2_init": {"mean": mean("prefinetune")},
                    "random_init": {"mean": mean("prefinetune_random")}}  # fmt: skip
        claims.append(_claim(
            "pre-finetuning from the encoder-decoder (UL2) init beats random init (Table 2)",
            mean("prefinetune") > mean("prefinetune_random"),
            f"UL2 init {mean('prefinetune'):.4f} vs random init {mean('prefinetune_random'):.4f}",
        ))  # fmt: skip
    smallest = dims[-1]
    drop = mean("soup") - mean("soup", smallest)
    claims.append(_claim(
        f"{smallest} dims within 3 points of {full} (Matryoshka, Tables 6-8)",
        drop <= 0.03,
        f"{full}: {mean('soup'):.4f}, {smallest}: {mean('soup', smallest):.4f}",
    ))  # fmt: skip
    for scheme in qat_runs:
        f, p, q = mean("soup"), mean(f"ptq/{scheme}"), mean(f"qat/{scheme}")
        claims.append(_claim(
            f"{scheme}: QAT within 1 point of float (Table 1)", f - q <= 0.01,
            f"float {f:.4f}, QAT {q:.4f}, PTQ {p:.4f}",
        ))  # fmt: skip
        if scheme in ("q4_0", "mixed"):
            claims.append(_claim(
                f"{scheme}: QAT at least as good as PTQ at int4", q >= p,
                f"QAT {q:.4f} vs PTQ {p:.4f}",
            ))  # fmt: skip

    walls = [s["wall_s"] for s in stages.values() if s["wall_s"] is not None]
    return {
        "before": before,
        "after": after,
        "headline_task": head_name,
        "dims": dims,
        "groups": groups,
        "stages": stages,
        "soup": soup_section,
        "quant": quant,
        "mrl": mrl,
        "ablation": ablation,
        "claims": claims,
        "models": {name: {"mean": mean(name), "scores": s} for name, s in scored.items()},
        "wall_s": round(float(sum(walls)), 1),
    }


# -------------------------------------------------------------------------------------------------
# Writing it


def _plots(report: dict, workdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(report["models"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(names)), [report["models"][n]["mean"] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("held-out mean main score")
    ax.set_title("every stage's model on the test splits")
    fig.tight_layout()
    fig.savefig(workdir / "report_stages.png", dpi=100)
    plt.close(fig)
    written.append("report_stages.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    dims = [int(d) for d in report["mrl"]["dims"]]
    ax.plot(dims, [report["mrl"]["dims"][str(d)]["mean"] for d in dims], "o-", label="soup")
    for scheme, q in report["quant"].items():
        if isinstance(q, dict):
            ax.plot(dims, [q["qat"][str(d)]["mean"] for d in dims], ".--", label=f"QAT {scheme}")
    ax.set_xlabel("Matryoshka dims")
    ax.set_ylabel("held-out mean main score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "report_mrl.png", dpi=100)
    plt.close(fig)
    written.append("report_mrl.png")
    return written


def format_markdown(report: dict) -> str:
    lines = ["# Recipe report", ""]
    lines += [f"Headline ({report['headline_task']}, test split):", ""]
    rows = [[m, f"{report['before'][m]:.4f}", f"{report['after'][m]:.4f}",
             f"{report['after'][m] - report['before'][m]:+.4f}"] for m in report["after"]]  # fmt: skip
    lines += ["```", format_table(["metric", "untrained", "final", "change"], rows), "```", ""]
    lines += ["## Models (test mean over task groups, full width)", "", "```"]
    lines.append(format_table(["model", "mean"],
                              [[n, f"{m['mean']:.4f}"] for n, m in report["models"].items()]))  # fmt: skip
    lines += ["```", "", "## Float vs PTQ vs QAT (test mean)", "", "```"]
    dims = [str(d) for d in report["dims"]]
    qrows = []
    for scheme, q in report["quant"].items():
        if isinstance(q, dict):
            for kind in ("float", "ptq", "qat"):
                qrows.append([scheme, kind, *(f"{q[kind][d]['mean']:.4f}" for d in dims)])
    lines += [format_table(["scheme", "weights", *dims], qrows), "```", ""]
    lines += ["## Claims", ""]
    for c in report["claims"]:
        lines.append(f"- **{'holds' if c['holds'] else 'does not hold'}**: {c['claim']} "
                     f"({c['evidence']})")  # fmt: skip
    lines += ["", f"Stage wall time in all: {report['wall_s']:.0f} s", ""]
    return "\n".join(lines)


def write_report(report: dict, workdir: Path) -> None:
    workdir = Path(workdir)
    report["plots"] = _plots(report, workdir)
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (workdir / "report.md").write_text(format_markdown(report), encoding="utf-8")


def format_summary(report: dict, wall: float, workdir) -> str:
    """The table the recipe prints at the end: each stage, then the headline and the claims."""
    rows = []
    for name, s in report["stages"].items():
        wall_s = "" if s["wall_s"] is None else f"{s['wall_s']:.0f} s"
        rows.append([name, wall_s, f"{s['mean']:.4f}" if "mean" in s else ""])
    out = [format_table(["stage", "wall", "test mean"], rows), ""]
    b, a = report["before"], report["after"]
    out.append(f"held-out {report['headline_task']}: nDCG@10 {b['ndcg_at_10']:.4f} (untrained) -> "
               f"{a['ndcg_at_10']:.4f} (final), recall@10 {b['recall_at_10']:.4f} -> "
               f"{a['recall_at_10']:.4f}")  # fmt: skip
    for c in report["claims"]:
        out.append(f"  {'holds' if c['holds'] else 'does not hold':>13}: {c['claim']} "
                   f"({c['evidence']})")  # fmt: skip
    out.append(f"\nwall time {wall:.0f} s; report: {Path(workdir) / 'report.md'}")
    return "\n".join(out)
