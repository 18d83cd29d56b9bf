"""kill -9 anywhere: the training CLI with asynchronous checkpoints at every step is SIGKILLed at
seeded random moments (half of them while Orbax is writing a checkpoint) and restarted with the
same command each time; the run ends with the parameters, optimizer-free metrics rows and data
position of an uninterrupted run, bit for bit, and no kill ever left a checkpoint that looks
complete but is damaged.

``EGJ_KILL_SEED=N`` picks other kill moments (default 0)."""

import json
import os
import random
import re
import signal
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
SEED = int(os.environ.get("EGJ_KILL_SEED", "0"))
STEPS = 10
KILLS = 4


def _command(tmp: Path, workdir: Path) -> list[str]:
    flags = ["--config.checkpoint.every=1", "--config.checkpoint.async_save=True"]
    return trainlib.main_command(tmp, workdir, STEPS, *flags, "--config.checkpoint.keep=2")


def _env() -> dict[str, str]:
    # One compilation cache for every start: a restart compiles nothing.
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(REPO / ".cache" / "xla"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(tmp: Path, workdir: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            _command(tmp, workdir), cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT
        )


def _tmp_dirs(workdir: Path) -> set[str]:
    """Orbax's ``<step>.orbax-checkpoint-tmp-*`` folders: writes in progress (or killed)."""
    try:
        names = {e.name for e in os.scandir(workdir / checkpoint.CHECKPOINTS)}
    except FileNotFoundError:
        return set()
    return {n for n in names if checkpoint._TMP in n}


def _logged_step(log: Path) -> int:
    """The last step this start printed (``step N: ...``)."""
    return max(map(int, re.findall(r"^step (\d+):", log.read_text(), re.M)), default=0)


def _kill_when(proc, workdir: Path, kind: str, step: int, delay: float, log: Path) -> bool:
    """SIGKILLs `proc` once it has logged step `step` (then after `delay` s) or, for kind
    "write", while it writes the checkpoint of a step >= `step`. Returns whether a checkpoint
    write of this start was in progress at the kill."""
    stale = _tmp_dirs(workdir)  # an earlier kill's (the run removes them when it starts)
    deadline = time.time() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended before its kill ({kind} {step}):\n{log.read_text()[-3000:]}"
            )
        assert time.time() < deadline, log.read_text()[-3000:]
        writing = [int(n.split(".")[0]) for n in _tmp_dirs(workdir) - stale]
        if kind == "write" and any(s >= step for s in writing):
            break
        if kind == "step" and _logged_step(log) >= step:
            time.sleep(delay)
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return bool(_tmp_dirs(workdir) - stale)


def _final(workdir: Path):
    step_dir = checkpoint.resolve_step_dir(workdir)
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    return step_dir.name, meta["data"], jax.device_get(checkpoint.restore_params(step_dir))


@pytest.mark.slow
def test_sigkill_anywhere_resumes_exactly(tmp_path):
    trainlib.main_inputs(tmp_path)

    straight = tmp_path / "straight"
    done = subprocess.run(_command(tmp_path, straight), cwd=REPO, env=_env(), capture_output=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(2, STEPS), KILLS))
    kinds = rng.sample(["write", "step"] * (KILLS // 2), KILLS)
    killed = tmp_path / "killed"
    mid_write = 0
    for i, (kind, step) in enumerate(zip(kinds, targets)):
        log = tmp_path / f"run{i}.log"
        proc = _start(tmp_path, killed, log)
        try:
            writing = _kill_when(proc, killed, kind, step, rng.uniform(0.0, 0.3), log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        mid_write += writing
        assert not kind == "write" or writing, f"kill {i}: no checkpoint write in progress"
    log = tmp_path / "final.log"
    proc = _start(tmp_path, killed, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    print(f"{KILLS} SIGKILLs, {mid_write} while a checkpoint was being written")
    assert mid_write >= KILLS // 2
    # No kill left a complete-looking but damaged checkpoint behind (resume moves those aside).
    assert not (killed / checkpoint.DAMAGED).exists()
    assert not _tmp_dirs(killed)  # the killed writes were removed, not left to pile up

    want, got = trainlib.train_rows(straight), trainlib.train_rows(killed)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # each step logged once
    assert got == want  # every loss and metric, exactly
    want_step, want_data, want_params = _final(straight)
    got_step, got_data, got_params = _final(killed)
    assert (got_step, got_data) == (want_step, want_data)
    flat = jax.tree_util.tree_flatten_with_path(want_params)[0]
    for (path, a), b in zip(flat, jax.tree.leaves(got_params), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
