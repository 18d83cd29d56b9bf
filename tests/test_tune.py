"""The mixture search: stick-breaking, and a 4-trial search killed with SIGKILL during its third
trial and restarted (same command) finishing with exactly 4 trials, the first two not redone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from embeddinggemma_jax import simplex, tune

sys.path.insert(0, str(Path(__file__).parent / "train"))
import trainlib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_stick_breaking_round_trips(k):
    rng = np.random.default_rng(k)
    for alpha in (0.1, 1.0, 10.0):
        for w in rng.dirichlet(np.full(k, alpha), size=50):
            u = simplex.to_cube(w)
            assert len(u) == k - 1 and all(0.0 <= x <= 1.0 for x in u)
            np.testing.assert_allclose(simplex.from_cube(u), w, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(simplex.to_cube(simplex.from_cube(u)), u, atol=1e-9)
    for u in rng.random((50, k - 1)):
        w = simplex.from_cube(u)
        assert abs(sum(w) - 1.0) < 1e-12 and min(w) >= 0.0
        np.testing.assert_allclose(simplex.to_cube(w), u, atol=1e-9)
    # the corners and the uniform mixture are exact points
    assert simplex.from_cube([0.0] * (k - 1))[-1] == 1.0
    assert simplex.from_cube([1.0] + [0.0] * (k - 2))[0] == 1.0
    np.testing.assert_allclose(simplex.from_cube(simplex.to_cube([1.0] * k)), [1.0 / k] * k)


def test_planned_mixtures_are_exact_cube_points():
    names = ["a", "b", "c"]
    for m in [{"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 1e-6, "b": 0.5, "c": 0.5 - 1e-6}]:
        back = tune.mixture_of(names, tune.cube_params(names, m))
        np.testing.assert_allclose([back[n] for n in names], [m[n] for n in names], rtol=1e-9)


CONFIG = """
import json
from embeddinggemma_jax.cli import load_config
import ml_collections

def get_config(arg=None):
    train = load_config({tiny!r})
    train.unlock()
    train.num_steps = 4
    train.tokenizer = {tokenizer!r}
    train.data.datasets = json.loads({datasets!r})
    train.checkpoint.every = 2
    train.checkpoint.keep = 1
    train.model.mlp_dim = 40  # a shape field: the trials take the base run's shape
    c = ml_collections.ConfigDict()
    c.train = train
    # base_steps = num_steps: the base run's train step (its learning-rate schedule) is the
    # trials' one, so the search compiles it once, not twice.
    c.search = ml_collections.ConfigDict(dict(
        num_dirichlet=1, alpha=1.0, num_bo=2, seed=3, sampler="gp", top_k=2, base_steps=4,
        tokenizer_vocab=0, eval_batch_size=16, dev_tasks={dev!r}, build={{}}))
    c.lock()
    return c
"""


def _search_config(tmp: Path) -> Path:
    rows = trainlib.records(90, num_negatives=1)
    datasets = []
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        path = trainlib.write_jsonl(tmp / "data" / f"{name}.jsonl", rows[i * 25 : (i + 1) * 25])
        datasets.append(dict(name=name, path=str(path), weight=[1.0, 2.0, 1.0][i], num_negatives=1))
    dev = trainlib.write_beir(tmp / "data" / "dev", rows[75:])
    text = CONFIG.format(
        tiny=str(REPO / "configs" / "tiny.py"),
        tokenizer=str(trainlib.train_sentencepiece(tmp / "spm")),
        datasets=json.dumps(datasets),
        dev=f"code={dev}",
    )
    (tmp / "search_config.py").write_text(text)
    return tmp / "search_config.py"


def _command(config: Path, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "embeddinggemma_jax.tune",
        f"--config={config}",
        f"--workdir={workdir}",
    ]


def _env():
    # XLA's cheapest compile (jax_disable_most_optimizations): compiling the tiny train step costs
    # far more than running it; every run of the search here is compiled the same way.
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    )
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_search_killed_during_third_trial_resumes(tmp_path):
    config = _search_config(tmp_path)
    workdir = tmp_path / "search"
    proc = subprocess.Popen(
        _command(config, workdir),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("trial slot 2 "):
                break
        else:
            pytest.fail("the search ended before its third trial:\n" + "".join(seen[-30:]))
        # Kill once the third trial has written its first checkpoint (mid-training).
        deadline = time.time() + 60
        while not list((workdir / "trials" / "002").glob("checkpoints/2")):
            assert time.time() < deadline and proc.poll() is None, "".join(seen[-30:])
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = json.loads((workdir / "trials.json").read_text())
    assert [t["slot"] for t in before["trials"]] == [0, 1]
    killed_weights = next(line for line in seen if line.startswith("trial slot 2 "))
    first_two = {t["slot"]: t for t in before["trials"]}
    stamps = {
        s: (workdir / "trials" / f"{s:03d}" / "trial.json").stat().st_mtime_ns for s in (0, 1)
    }

    done = subprocess.run(
        _command(config, workdir), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = json.loads((workdir / "trials.json").read_text())
    trials = after["trials"]
    assert [t["slot"] for t in trials] == [0, 1, 2, 3]
    assert [t["kind"] for t in trials] == ["seed", "dirichlet", "bo", "bo"]
    for s in (0, 1):  # not redone: same scores, same weights, result files untouched
        assert trials[s]["objective"] == first_two[s]["objective"]
        assert trials[s]["weights"] == first_two[s]["weights"]
        assert trials[s]["attempts"] == 1
        assert (workdir / "trials" / f"{s:03d}" / "trial.json").stat().st_mtime_ns == stamps[s]
    # The killed trial was redone at the same point of the cube (its printed weights).
    assert trials[2]["attempts"] == 2
    assert "trial slot 2 (bo, worker 0): " in killed_weights
    shown = ", ".join(f"{n}={w:.3f}" for n, w in trials[2]["weights"].items())
    assert shown in killed_weights and f"trial slot 2 (bo, worker 0): {shown}" in done.stdout
    # The seed trial is the config's mixture; every trial's weights are on the simplex.
    np.testing.assert_allclose(list(trials[0]["weights"].values()), [0.25, 0.5, 0.25], rtol=1e-9)
    for t in trials:
        assert abs(sum(t["weights"].values()) - 1) < 1e-9
        assert set(t["dev"]["groups"]) == {"code"} and 0 <= t["objective"] <= 1
    # Outputs: table, plot, top-k links to run directories holding a checkpoint.
    assert (workdir / "trials.png").stat().st_size > 0
    assert len((workdir / "trials.txt").read_text().splitlines()) == 5
    ranked = sorted(trials, key=lambda t: (-t["objective"], t["slot"]))
    assert after["top"] == [t["slot"] for t in ranked[:2]]
    for rank, t in enumerate(ranked[:2], 1):
        link = workdir / "top" / str(rank)
        assert link.resolve() == Path(t["run_dir"]).resolve()
        assert (link / "checkpoints" / "4" / "params").is_dir()
        trial_config = json.loads((link / "train_config.json").read_text())
        assert trial_config["init_from"] == str(workdir / "base")  # the shared base run
    from embeddinggemma_jax import checkpoint

    assert checkpoint.load_model_info(workdir / "base")[1]["model_config"]["mlp_dim"] == 40
    # A third run has nothing left to do and redoes nothing.
    again = subprocess.run(
        _command(config, workdir), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 0 and "trial slot" not in again.stdout
    assert json.loads((workdir / "trials.json").read_text())["trials"] == trials
