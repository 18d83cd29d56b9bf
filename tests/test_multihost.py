"""Multi-host on this CPU: two processes joined by ``jax.distributed`` (a local coordinator, gloo
collectives, one CPU device each) train the tiny config to exactly the per-step metrics and
parameters of one process with two CPU devices and the same global batch; SIGTERM to one of
them makes both save the same step and exit 143, and the restarted pair ends exactly where the
uninterrupted run does."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from embeddinggemma_jax import checkpoint

sys.path.insert(0, str(Path(__file__).parent / "train"))
import trainlib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
TERM_AFTER = 3  # SIGTERM once step 3 is logged


def _command(tmp: Path, workdir: Path) -> list[str]:
    flags = ["--config.checkpoint.every=2", "--config.checkpoint.async_save=True"]
    return trainlib.main_command(tmp, workdir, STEPS, *flags)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "XLA_FLAGS"}
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".cache" / "xla"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **extra,
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_pair(tmp: Path, workdir: Path, name: str) -> list[tuple[subprocess.Popen, Path]]:
    address = f"localhost:{_free_port()}"
    procs = []
    for i in range(2):
        log = tmp / f"{name}-{i}.log"
        env = _env(JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        with log.open("w") as out:
            proc = subprocess.Popen(
                _command(tmp, workdir), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        procs.append((proc, log))
    return procs


def _wait(procs, timeout: float = 300) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p, _ in procs]
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _logs(procs) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for _, log in procs)


def _last_logged_step(workdir: Path) -> int:
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return max(steps, default=0)


def _params(workdir: Path):
    return jax.device_get(checkpoint.restore_params(workdir))


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_after_sigterm(tmp_path):
    trainlib.main_inputs(tmp_path)

    single = tmp_path / "single"
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run(
        _command(tmp_path, single), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mesh(data=2, fsdp=1, tensor=1) over 2 x cpu" in done.stderr

    pair = tmp_path / "pair"
    procs = _start_pair(tmp_path, pair, "first")
    deadline = time.time() + 300
    while _last_logged_step(pair) < TERM_AFTER:
        assert all(p.poll() is None for p, _ in procs), _logs(procs)
        assert time.time() < deadline, _logs(procs)
        time.sleep(0.05)
    procs[1][0].send_signal(signal.SIGTERM)  # the process that does not log: both stop
    assert _wait(procs) == [143, 143], _logs(procs)
    saved = []
    for _, log in procs:
        found = re.findall(r"process (\d): preemption, saving step (\d+)", log.read_text())
        assert len(found) == 1, _logs(procs)
        saved.append(found[0])
    (p0, step0), (p1, step1) = saved
    assert (p0, p1) == ("0", "1") and step0 == step1, saved
    step = int(step0)
    assert TERM_AFTER <= step < STEPS
    assert checkpoint.resolve_step_dir(pair).name == str(step)  # saved, complete
    assert "mesh(data=2, fsdp=1, tensor=1) over 2 x cpu" in procs[0][1].read_text()

    procs = _start_pair(tmp_path, pair, "again")
    assert _wait(procs) == [0, 0], _logs(procs)
    assert f"training contrastive from step {step} to {STEPS}" in procs[0][1].read_text()

    want, got = trainlib.train_rows(single), trainlib.train_rows(pair)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert got == want  # every per-step loss and metric, exactly
    flat = jax.tree_util.tree_flatten_with_path(_params(single))[0]
    for (path, a), b in zip(flat, jax.tree.leaves(_params(pair)), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
