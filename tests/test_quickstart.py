"""`make quickstart`'s program, shortened to a few steps, in a subprocess with its own cache: the
report it promises, and a rerun in the same workdir after the tokenizer was rebuilt (a fresh run
must replace the old run's files, not trip over them)."""

import json
import os
import shutil
import subprocess
import sys

from conftest import REPO


def _quickstart(workdir, cache):
    env = {**os.environ, "EMBEDDINGGEMMA_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "embeddinggemma_jax.quickstart", f"--workdir={workdir}"]
    cmd += ["--config.num_steps=3", "--config.log.every=1", "--config.checkpoint.every=0"]
    cmd += ["--config.optimizer.warmup_steps=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_quickstart_report_and_fresh_rerun(tmp_path):
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    out = _quickstart(workdir, cache)
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["before"]) == set(report["after"]) == {"ndcg_at_10", "recall_at_10"}
    for metrics in (report["before"], report["after"]):
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert report["steps"] == 3 and report["wall_s"] > 0
    assert report["data"]["train_records"] > 1000 and report["data"]["eval_queries"] > 100
    assert "ndcg_at_10" in out and "report:" in out
    assert (workdir / "tokenizer.model").is_file()

    # Rebuild the tokenizer (same pieces, new bytes: the model file records its temp path), then
    # rerun in the same workdir: the previous run is replaced.
    shutil.rmtree(cache / "quickstart-tokenizer")
    out = _quickstart(workdir, cache)
    assert "removing the previous quickstart run" in out
    assert json.loads((workdir / "report.json").read_text())["steps"] == 3
