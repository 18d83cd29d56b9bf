"""The evaluate CLI on a tiny random model: table, JSON and plot, Orbax checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from embeddinggemma_jax.eval import embedder_encode_fn
from embeddinggemma_jax.evaluate import main


def test_cli_report_table_and_plot(tiny_embedder, local_tasks, tmp_path, capsys):
    model_dir = tiny_embedder.save_pretrained(tmp_path / "model")
    folders = [t.save(tmp_path / t.name) for t in local_tasks]
    out = tmp_path / "report" / "report.json"
    report = main(
        ["--model", str(model_dir), "--tasks", ",".join(map(str, folders)),
         "--dims", "40,12", "--output", str(out), "--batch-size", "16"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert all(t.name in printed for t in local_tasks) and "40" in printed
    assert json.loads(out.read_text()) == report
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same numbers as evaluating the tasks directly with the in-memory model.
    encode = embedder_encode_fn(tiny_embedder, batch_size=16)
    for task in local_tasks:
        direct = task.evaluate(encode, [40, 12])
        for dim in (40, 12):
            got = report["tasks"][task.name]["results"][str(dim)]
            assert got == pytest.approx(direct[dim], abs=1e-6), (task.name, dim)


def test_cli_on_orbax_checkpoint(tiny_embedder, local_tasks, tmp_path):
    """A workdir written by training's Checkpointer evaluates like the in-memory model."""
    ckpt = pytest.importorskip("embeddinggemma_jax.checkpoint")
    workdir = tmp_path / "run"
    saver = ckpt.Checkpointer(workdir, async_save=False)
    saver.copy_tokenizer(tiny_embedder.tokenizer.path)
    state = SimpleNamespace(
        params=tiny_embedder.params,
        opt_state={"count": np.zeros((), np.int32)},
        rng=np.zeros(2, np.uint32),
    )
    export_info = {
        "task": "contrastive",
        "model_config": dataclasses.asdict(tiny_embedder.config),
        "prompts": tiny_embedder.prompts,
        "tokenizer": {
            "file": ckpt.TOKENIZER,
            "sha256": ckpt.file_sha256(tiny_embedder.tokenizer.path),
        },
    }
    saver.save(3, state, data_state=None, config={}, export_info=export_info)
    saver.close()
    task = local_tasks[0]
    folder = task.save(tmp_path / task.name)
    for model_path in (workdir, workdir / "checkpoints" / "3"):
        report = main(["--model", str(model_path), "--tasks", str(folder), "--dims", "40"])
        direct = task.evaluate(embedder_encode_fn(tiny_embedder), [40])[40]
        assert report["tasks"][task.name]["results"]["40"] == pytest.approx(direct, abs=1e-6)


def test_cli_fails_on_unknown_task_before_loading(tmp_path):
    with pytest.raises(KeyError, match="unknown task"):
        main(["--model", str(tmp_path / "missing"), "--tasks", "no-such-task"])


def test_cli_quant_evaluates_the_quantized_model(tiny_embedder, local_tasks, tmp_path):
    """--quant scores exactly what Embedder.from_pretrained(quant=...) encodes, not the float model."""
    from embeddinggemma_jax import Embedder

    model_dir = tiny_embedder.save_pretrained(tmp_path / "model")
    task = local_tasks[0]
    folder = task.save(tmp_path / task.name)
    args = ["--model", str(model_dir), "--tasks", str(folder), "--dims", "40",
            "--output", str(tmp_path / "r.json"), "--batch-size", "16"]  # fmt: skip
    quantized = main([*args, "--quant", "mixed"])["tasks"][task.name]["results"]["40"]
    plain = main(args)["tasks"][task.name]["results"]["40"]
    q_model = Embedder.from_pretrained(model_dir, quant="mixed")  # per channel: any size
    direct = task.evaluate(embedder_encode_fn(q_model, batch_size=16), [40])[40]
    assert quantized == pytest.approx(direct, abs=1e-6)
    assert quantized != plain
