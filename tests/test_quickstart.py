"""`make quickstart`'s program, shortened to a few steps, in a subprocess with its own cache: the
report it promises, the next step it prints run literally from the directory it ran in, and a
rerun in the same workdir after the tokenizer was rebuilt (a fresh run must replace the old run's
files, not trip over them)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np

from embeddinggemma_jax.embedder import Embedder


def _quickstart(cwd, cache, workdir="runs/quickstart"):
    env = {**os.environ, "EMBEDDINGGEMMA_JAX_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "embeddinggemma_jax.quickstart", f"--workdir={workdir}"]
    cmd += ["--config.num_steps=3", "--config.log.every=1", "--config.checkpoint.every=0"]
    cmd += ["--config.optimizer.warmup_steps=1"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_quickstart_report_and_fresh_rerun(tmp_path, monkeypatch):
    workdir, cache = tmp_path / "runs" / "quickstart", tmp_path / "cache"
    out = _quickstart(tmp_path, cache)
    report = json.loads((workdir / "report.json").read_text())
    assert set(report["before"]) == set(report["after"]) == {"ndcg_at_10", "recall_at_10"}
    for metrics in (report["before"], report["after"]):
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert report["steps"] == 3 and report["wall_s"] > 0
    assert report["data"]["train_records"] > 1000 and report["data"]["eval_queries"] > 100
    assert "ndcg_at_10" in out and "report:" in out
    assert (workdir / "tokenizer.model").is_file()

    # Its printed next step, literally, from where it ran (a path relative to that directory).
    step = next(line for line in out.splitlines() if line.startswith("embed with it: "))
    code = step.removeprefix("embed with it: ")
    assert code == "Embedder.from_pretrained('runs/quickstart')"
    monkeypatch.chdir(tmp_path)
    embedder = eval(code, {"Embedder": Embedder})
    vector = embedder.encode("sort a list in place")
    assert vector.shape == (embedder.config.output_dim,)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-5)

    # Rebuild the tokenizer (same pieces, new bytes: the model file records its temp path), then
    # rerun in the same workdir: the previous run is replaced.
    shutil.rmtree(cache / "quickstart-tokenizer")
    out = _quickstart(tmp_path, cache)
    assert "removing the previous quickstart run" in out
    assert json.loads((workdir / "report.json").read_text())["steps"] == 3
