"""Preflight: an unwritable workdir, a workdir trained with another model shape or tokenizer, and a
batch that does not divide over the mesh fail in one line (UserError) before anything compiles."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import random_params
from train.trainlib import tiny_config

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.model import GLOBAL, ModelConfig, param_shapes
from embeddinggemma_jax.text import Tokenizer
from embeddinggemma_jax.train.trainer import Trainer


class _NoCompile:
    """Fails the test if the model (its initialiser or train step) is compiled while active;
    scalar helpers (an rng seed) may compile."""

    def __enter__(self):
        self._before = jax.config.jax_log_compiles
        self.seen = []
        import logging

        class H(logging.Handler):
            def emit(h, record):
                text = record.getMessage()
                if "Compiling" in text and ("train_step" in text or "init" in text):
                    self.seen.append(text)

        self._h = H()
        logging.getLogger("jax").addHandler(self._h)
        jax.config.update("jax_log_compiles", True)
        return self

    def __exit__(self, *exc):
        import logging

        jax.config.update("jax_log_compiles", self._before)
        logging.getLogger("jax").removeHandler(self._h)
        assert not self.seen, self.seen[:2]


def _one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_unwritable_workdir(tmp_path):
    config = tiny_config(tmp_path)
    (tmp_path / "a_file").write_text("")
    with _NoCompile(), pytest.raises(UserError, match="the workdir is not writable") as e:
        Trainer(config, tmp_path / "a_file" / "run")
    assert _one_line(e).startswith(str(tmp_path / "a_file" / "run"))


def test_workdir_of_another_model_shape(tmp_path):
    config = tiny_config(tmp_path)
    tok = Tokenizer(config.tokenizer)
    other = ModelConfig.tiny(vocab_size=tok.vocab_size, num_layers=1, layer_types=(GLOBAL,))
    params = random_params(param_shapes(other), 0.1)
    checkpoint.save_params(tmp_path / "run", 3, params, model_info=other, tokenizer=tok.path)
    trainer = Trainer(config, tmp_path / "run")
    with (
        _NoCompile(),
        pytest.raises(
            UserError,
            match=r"in the checkpoint but .* in this model|"
            r"another model",
        ) as e,
    ):
        trainer.restore_or_init()
    assert "checkpoints/3" in _one_line(e)


def test_workdir_of_another_tokenizer(tmp_path):
    config = tiny_config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tokenizer.model").write_bytes(b"another tokenizer")
    trainer = Trainer(config, tmp_path / "run")
    with _NoCompile(), pytest.raises(UserError, match="trained with another tokenizer") as e:
        trainer.restore_or_init()
    _one_line(e)


def test_batch_not_dividing_over_the_mesh(tmp_path):
    """Three fake CPU devices and a batch of 8, in a fresh process (the device count is fixed
    when JAX starts)."""
    tiny_config(tmp_path)  # the tokenizer and data files the child reads
    code = (  # noqa: UP031
        "import sys; sys.path[:0] = [%r, %r]\n"
        "from train.trainlib import tiny_config\n"
        "from embeddinggemma_jax.train.trainer import Trainer\n"
        "from embeddinggemma_jax.errors import UserError\n"
        "from pathlib import Path\n"
        "try:\n"
        "    Trainer(tiny_config(Path(%r)), Path(%r) / 'run')\n"
        "except UserError as e:\n"
        "    print('USER', e)\n"
    ) % (str(Path(__file__).parent), str(Path(__file__).parent), str(tmp_path), str(tmp_path))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=3",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "USER config.data.global_batch_size: 8 is not divisible by the mesh's 3" in proc.stdout
