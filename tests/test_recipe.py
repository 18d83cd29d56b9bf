"""The recipe end to end on its smallest config (configs/recipe.py:test): every stage runs and
writes its outputs, a rerun skips complete stages, --stage runs one, and a recipe SIGKILLed
mid-stage and restarted ends with the same report numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from embeddinggemma_jax import recipe
from embeddinggemma_jax.cli import load_config
from embeddinggemma_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONFIG = f"{REPO / 'configs' / 'recipe.py'}:test"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory, compilation_cache):
    # compilation_cache keeps every program this run compiles (most of the tiny model's take
    # under the repo-wide cache's 0.5 s): the search's trials and the finetunes share shapes, and
    # the SIGKILL test's recipe processes load them all instead of compiling them again.
    workdir = tmp_path_factory.mktemp("recipe")
    lines: list[str] = []
    report = recipe.run(load_config(CONFIG), workdir, log=lines.append)
    return workdir, report, lines


def _numbers(report: dict) -> dict:
    """What a rerun must reproduce: every model's scores and the claims' verdicts."""
    return {
        "models": report["models"],
        "quant": report["quant"],
        "claims": [(c["claim"], c["holds"], c["evidence"]) for c in report["claims"]],
        "before": report["before"],
        "after": report["after"],
    }


def test_every_stage_runs_and_the_report_has_every_section(finished):
    workdir, report, lines = finished
    stages = recipe.Recipe(load_config(CONFIG), workdir).stages
    assert stages == list(recipe.STAGES)
    for stage in stages:
        done = json.loads((workdir / stage / recipe.DONE).read_text())
        assert done["stage"] == stage and done["wall_s"] >= 0
        assert any(line.startswith("[") and stage in line and "done in" in line for line in lines)
    on_disk = json.loads((workdir / "report.json").read_text())
    assert _numbers(on_disk) == _numbers(report)
    for key in ("before", "after", "stages", "soup", "quant", "mrl", "ablation", "claims"):
        assert report[key], key
    assert set(report["stages"]) == set(stages)
    assert {"ndcg_at_10", "recall_at_10"} <= set(report["after"])
    q = report["quant"]["q8_0"]
    assert set(q["float"]) == set(q["ptq"]) == set(q["qat"]) == {"96", "48", "24"}
    # QAT trained from the soup: its scores are its own, not the soup's nor PTQ's.
    assert report["models"]["qat/q8_0"]["scores"] != report["models"]["ptq/q8_0"]["scores"]
    assert q["gguf_bytes"] > 0
    assert [int(d) for d in report["mrl"]["dims"]] == [96, 48, 24]
    assert len(report["soup"]["ingredients"]) == 2
    assert all(isinstance(c["holds"], bool) and c["evidence"] for c in report["claims"])
    assert "lee-sts" in report["models"]["soup"]["scores"]
    for name in ("report.md", *report["plots"]):
        assert (workdir / name).stat().st_size > 0
    assert (workdir / "export" / "model-q8_0.gguf").stat().st_size > 0
    assert (workdir / "export" / "model-q8_0" / "modules.json").is_file()
    # The stages chain: UL2 starts from the causal LM, pre-finetuning from UL2, the finetunes
    # from pre-finetuning, QAT from the soup.
    train_config = json.loads((workdir / "ul2" / "run" / "train_config.json").read_text())
    assert train_config["init_from"] == str(workdir / "causal_lm" / "run")
    pre = json.loads((workdir / "prefinetune" / "run" / "train_config.json").read_text())
    assert pre["init_from"] == str(workdir / "ul2" / "run")


def test_rerun_skips_complete_stages_and_one_stage_reruns_alone(finished):
    workdir, report, _ = finished
    lines: list[str] = []
    start = time.perf_counter()
    again = recipe.run(load_config(CONFIG), workdir, log=lines.append)
    assert time.perf_counter() - start < 5
    assert all("complete, skipped" in line for line in lines) and len(lines) == len(recipe.STAGES)
    assert _numbers(again) == _numbers(report)
    # --stage=export after its stage.json is gone: that stage alone runs again.
    before = json.loads((workdir / "export" / recipe.DONE).read_text())["outputs"]
    (workdir / "export" / recipe.DONE).unlink()
    lines.clear()
    recipe.run(load_config(CONFIG), workdir, stage="export", log=lines.append)
    assert [line.split()[1] for line in lines] == ["export", "export"]  # running, done
    assert json.loads((workdir / "export" / recipe.DONE).read_text())["outputs"] == before


def test_a_stage_whose_inputs_are_missing_fails_in_one_line(tmp_path):
    with pytest.raises(UserError, match="stage 'finetune' is not complete"):
        recipe.run(load_config(CONFIG), tmp_path, stage="soup", log=lambda _: None)
    cmd = [sys.executable, "-m", "embeddinggemma_jax.recipe", f"--config={CONFIG}",
           f"--workdir={tmp_path}", "--stage=nope"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "error: --stage: unknown stage 'nope'" in p.stderr


def test_sigkill_mid_stage_then_rerun_gives_the_same_report(finished, tmp_path):
    """Killed while pre-finetuning has written a checkpoint (mid-stage), then while searching;
    the restarted recipe finishes with the numbers of the uninterrupted run."""
    _, report, _ = finished
    cmd = [sys.executable, "-m", "embeddinggemma_jax.recipe", f"--config={CONFIG}",
           f"--workdir={tmp_path}"]  # fmt: skip
    # The programs the fixture's run compiled (its compilation_cache) serve this one too.
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir}  # fmt: skip
    for marker in (tmp_path / "prefinetune" / "run" / "checkpoints", tmp_path / "search" / "study"):
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.time() + 300
        while not marker.exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.stderr.read()[-2000:]
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not (marker.parent / recipe.DONE).exists()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "complete, skipped" in p.stdout  # the stages finished before the kills
    resumed = json.loads((tmp_path / "report.json").read_text())
    assert _numbers(resumed) == _numbers(report)
