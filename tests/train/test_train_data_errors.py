"""Bad data and bad settings fail in the Trainer's constructor, before any parameter exists or any
step runs, with the file, line and field named."""

import json

import pytest
import trainlib

from embeddinggemma_jax import checkpoint
from embeddinggemma_jax.data import DataError
from embeddinggemma_jax.train.trainer import Trainer


def _trainer(config, workdir):
    return Trainer(config, workdir)


def test_malformed_record_names_file_line_and_field(tmp_path):
    config = trainlib.tiny_config(tmp_path)
    rows = [json.dumps(r) for r in trainlib.records(12)]
    rows[6] = json.dumps({"query": "ok", "positive": "", "negatives": ["x", "y"]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(rows) + "\n")
    with config.unlocked():
        config.train_data = str(bad)
    with pytest.raises(DataError) as e:
        _trainer(config, tmp_path / "run")
    message = str(e.value)
    assert "bad.jsonl" in message and "line 7" in message and "positive" in message
    assert not (tmp_path / "run" / checkpoint.CHECKPOINTS).exists()


def test_too_few_negatives_fail_before_training(tmp_path):
    config = trainlib.tiny_config(tmp_path)
    rows = trainlib.records(12)
    rows[3]["negatives"] = []
    with config.unlocked():
        config.train_data = str(trainlib.write_jsonl(tmp_path / "few.jsonl", rows))
    with pytest.raises(DataError, match=r"few\.jsonl line 4.*negatives"):
        _trainer(config, tmp_path / "run")


def test_empty_and_missing_datasets(tmp_path):
    config = trainlib.tiny_config(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with config.unlocked():
        config.train_data = str(empty)
    with pytest.raises(DataError, match="empty"):
        _trainer(config, tmp_path / "run")
    with config.unlocked():
        config.train_data = str(tmp_path / "nowhere" / "*.jsonl")
    with pytest.raises(DataError):
        _trainer(config, tmp_path / "run")
    with config.unlocked():
        config.train_data = ""
    with pytest.raises(ValueError, match=r"data\.datasets\[0\]\.path is empty"):
        _trainer(config, tmp_path / "run")


def test_bad_settings_are_named(tmp_path):
    config = trainlib.tiny_config(tmp_path, **{"data.global_batch_size": 6})
    import jax

    from embeddinggemma_jax import parallel

    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    with config.unlocked():
        config.model.dtype = "float16"
    with pytest.raises(ValueError, match="float16"):
        Trainer(config, tmp_path / "run", mesh=mesh)
    with config.unlocked():
        config.model.dtype = "float32"
        config.optimizer.decay = "exponential"
    with pytest.raises(ValueError, match="optimizer.decay"):
        Trainer(config, tmp_path / "run", mesh=mesh)
    with config.unlocked():
        config.optimizer.decay = "cosine"
        config.task = "nope"
    with pytest.raises(ValueError, match="config.task"):
        Trainer(config, tmp_path / "run", mesh=mesh)
