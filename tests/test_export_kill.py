"""kill -9 during `export`: the CLI is SIGKILLed while it writes (once its temporary output has
its first bytes, then after a seeded pause of at most a few ms); nothing at the output path looks complete (no file, or the previous export untouched),
and the same command then writes exactly what an uninterrupted export writes."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest
from conftest import gguf_model_config

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.export import export
from embeddinggemma_jax.model.model import init_params

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("EGJ_KILL_SEED", "0"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, gemma_tokenizer_model):
    """A parameters-only run of a small model with Gemma's 262k vocabulary (a 64 MiB embedding
    table: the write takes long enough to be caught in the middle)."""
    cfg = gguf_model_config()
    params = jax.device_get(init_params(cfg, jax.random.key(0)))
    run = tmp_path_factory.mktemp("export-kill") / "run"
    checkpoint.save_params(run, 1, params, model_info=cfg, tokenizer=gemma_tokenizer_model)
    return run


def _files(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except FileNotFoundError:  # renamed or removed meanwhile
        return 0


def _command(run: Path, to: str, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "embeddinggemma_jax.export",
        f"--model={run}",
        f"--to={to}",
        "--quant=f32",
        f"--output={output}",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
@pytest.mark.parametrize("to", ["gguf", "sentence-transformers"])
def test_killed_export_leaves_nothing_complete(run_dir, tmp_path, to):
    name = "model.gguf" if to == "gguf" else "model-st"
    (tmp_path / "reference").mkdir()
    want = _files(export(str(run_dir), to, "f32", tmp_path / "reference" / name, progress=False))
    total = sum(len(b) for b in want.values())
    pause = random.Random(f"{SEED}-{to}").uniform(0.0, 0.005)

    output = tmp_path / "out" / name
    output.parent.mkdir()
    # The second export over a previous one is killed: the previous one must survive whole.
    for previous in (None, want):
        proc = subprocess.Popen(
            _command(run_dir, to, output),
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        partial = output.with_name(output.name + ".tmp")
        deadline = time.time() + 120
        try:
            while _size(partial) == 0:
                assert proc.poll() is None, "the export ended before its kill"
                assert time.time() < deadline
                time.sleep(0.001)
            time.sleep(pause)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert 0 < _size(partial) < total  # killed in the middle of the write
        if previous is None:
            assert not output.exists()
        else:
            assert _files(output) == previous
        done = subprocess.run(
            _command(run_dir, to, output), cwd=REPO, env=_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert _files(output) == want
        assert not partial.exists()
