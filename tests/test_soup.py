"""Model soups of tiny training runs: bit-exact for identical ingredients, the float32 mean for
uniform (read back with Orbax), greedy never below its best ingredient on dev, mismatches refused
in one line naming both, the soup loading in `Embedder` and as ``init_from``, and a killed soup
leaving nothing that looks complete."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from embeddinggemma_jax import Embedder, checkpoint, soup
from embeddinggemma_jax.errors import UserError
from embeddinggemma_jax.grouped_eval import GroupedTasks

sys.path.insert(0, str(Path(__file__).parent / "train"))
import trainlib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cheap_compile):
    """A real 1-step training run (the base: a Trainer checkpoint, optimizer state included) and
    three finetunes of it: its parameters moved by different random steps, saved as runs whose
    config records init_from=base (what a trainer started from the base records)."""
    from embeddinggemma_jax.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("soup")
    config = trainlib.tiny_config(tmp, num_steps=1, **{"checkpoint.every": 0})
    trainer = Trainer(config, tmp / "base")
    trainer.fit()
    trainer.close()
    base = tmp / "base"
    step_dir, info = checkpoint.load_model_info(base)
    params = jax.device_get(checkpoint.restore_params(base))
    ingredients = []
    for i in range(3):
        rng = np.random.default_rng(i)
        moved = jax.tree.map(
            lambda x, rng=rng: (x + rng.normal(0, 0.3 * (np.std(x) + 1e-3), x.shape)).astype(
                np.float32
            ),
            params,
        )
        ft_config = json.loads(json.dumps(config.to_dict()))
        ft_config["init_from"] = str(base)
        checkpoint.save_params(
            tmp / f"ft{i}", 3 + i, moved, model_info=info, config=ft_config,
            tokenizer=base / "tokenizer.model",
        )  # fmt: skip
        ingredients.append(tmp / f"ft{i}")
    dev = trainlib.write_beir(tmp / "data" / "dev", trainlib.records()[:24])
    return {"tmp": tmp, "base": base, "ingredients": ingredients, "dev": dev}


def _orbax_params(run: Path) -> list[np.ndarray]:
    """The parameters of a run's latest step, read with Orbax alone (no model config)."""
    step_dir = max(
        (p for p in (run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(step_dir / "params")
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_identical_ingredients_give_the_checkpoint_bit_for_bit(runs, tmp_path):
    a = runs["ingredients"][0]
    out = tmp_path / "same"
    report = soup.make_soup([a, a, a], out, progress=False, log=lambda _: None)
    assert report["num_kept"] == 3 and report["warnings"] == []
    got, want = _orbax_params(out), _orbax_params(a)
    assert len(got) == len(want) > 10
    for x, y in zip(got, want):
        assert x.dtype == np.float32 and y.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    assert (out / "checkpoints" / "3" / "params").is_dir()
    assert (out / "tokenizer.model").read_bytes() == (a / "tokenizer.model").read_bytes()
    assert json.loads((out / soup.REPORT).read_text())["method"] == "uniform"


def test_uniform_soup_is_the_float32_mean(runs, tmp_path):
    ing = runs["ingredients"]
    out = tmp_path / "uniform"
    soup.main([*map(str, ing), "--output", str(out)])  # the command line
    got = _orbax_params(out)
    each = [_orbax_params(r) for r in ing]
    for i, x in enumerate(got):
        stack = np.stack([e[i] for e in each]).astype(np.float64)
        mean = stack.mean(0)
        # float32 arithmetic: within a few float32 ulps of the ingredients' magnitude of the
        # exact mean
        bound = 4 * np.finfo(np.float32).eps * np.abs(stack).max(0)
        assert np.all(np.abs(x - mean) <= bound), np.max(np.abs(x - mean) - bound)
    differs = [not np.array_equal(got[i], each[0][i]) for i in range(len(got))]
    assert sum(differs) > len(got) // 2  # the ingredients really differ: the test is not trivial


def test_greedy_never_below_its_best_ingredient_on_dev(runs, tmp_path):
    ing = [*runs["ingredients"], runs["base"]]
    dev = GroupedTasks({"code": [str(runs["dev"])]}, "dev")
    out = tmp_path / "greedy"
    logs = []
    report = soup.make_soup(
        ing, out, method="greedy", dev_tasks=dev, progress=False, log=logs.append
    )
    scores = [e["dev"]["mean"] for e in report["ingredients"]]
    assert report["soup"]["dev"]["mean"] >= max(scores)
    best = int(np.argmax(scores))
    assert report["ingredients"][best]["kept"]
    # Walking the ingredients best first, each was kept exactly when it strictly improved the soup.
    current = max(scores)
    for i in sorted(range(len(ing)), key=lambda i: -scores[i])[1:]:
        e = report["ingredients"][i]
        assert e["kept"] == (e["soup_dev_if_added"]["mean"] > current)
        if e["kept"]:
            current = e["soup_dev_if_added"]["mean"]
    assert report["soup"]["dev"]["mean"] == current
    assert any("init_from" in w for w in report["warnings"])  # base has another starting point
    # The written soup scores what the report says.
    loaded = Embedder.from_pretrained(out, pack_length=None, scan_layers=False)
    again = dev.score(loaded)
    assert again["mean"] == pytest.approx(report["soup"]["dev"]["mean"], abs=1e-6)
    assert json.loads((out / soup.REPORT).read_text())["soup"]["dev"] == report["soup"]["dev"]
    table = soup.format_report(report)
    assert "dev:code" in table and table.count("\n") == len(ing) + 1


def test_mismatched_ingredients_are_refused_naming_both(runs, tmp_path, capsys):
    from conftest import train_tiny_tokenizer

    from embeddinggemma_jax.model import ModelConfig, init_params

    a = runs["ingredients"][0]
    step_dir, info = checkpoint.load_model_info(a)
    params = checkpoint.restore_params(a)
    # Another shape: a wider MLP.
    cfg = checkpoint._model_config(info)
    other = ModelConfig(**{**cfg.__dict__, "mlp_dim": cfg.mlp_dim + 5})
    wide = checkpoint.save_params(
        tmp_path / "wide", 2, init_params(other, jax.random.key(0)),
        model_info=checkpoint.describe_model(other), tokenizer=a / "tokenizer.model",
    )  # fmt: skip
    with pytest.raises(SystemExit) as e:
        soup.main([str(a), str(wide), "--output", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: cannot soup ")
    assert str(step_dir) in err and str(wide) in err and "shape" in err and "mlp" in err
    # Same shapes, another tokenizer.
    text = "".join(f"{r['query'].upper()} {r['positive'].upper()}\n" for r in trainlib.records())
    tok = train_tiny_tokenizer(tmp_path / "tok", text, vocab_size=150)
    retok = checkpoint.save_params(
        tmp_path / "retok", 2, params, model_info=info, tokenizer=tok.path
    )
    with pytest.raises(UserError, match="different tokenizers") as e:
        soup.make_soup([a, retok], tmp_path / "y", progress=False)
    assert str(step_dir) in str(e.value) and str(retok) in str(e.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_soup_loads_in_embedder_and_as_init_from(runs, tmp_path):
    from embeddinggemma_jax.train.trainer import Trainer

    out = tmp_path / "soup"
    soup.make_soup(runs["ingredients"], out, progress=False, log=lambda _: None)
    want = _orbax_params(out)
    embedder = Embedder.from_pretrained(out)
    for x, y in zip(jax.tree.leaves(jax.device_get(embedder.params)), want):
        np.testing.assert_array_equal(np.asarray(x), y)
    emb = embedder.encode(["Sort the list of x.", "def sort_list(x): ..."], prompt_name="query")
    assert emb.shape == (2, embedder.config.output_dim) and np.all(np.isfinite(emb))

    config = trainlib.tiny_config(tmp_path, num_steps=1)
    with config.unlocked():
        config.init_from = str(out)
        config.tokenizer = ""
    trainer = Trainer(config, tmp_path / "next")
    assert trainer.restore_or_init() == 0
    for x, y in zip(jax.tree.leaves(jax.device_get(trainer.state.params)), want):
        np.testing.assert_array_equal(np.asarray(x), y)
    trainer.close()


KILLED = """
import os, signal, sys
from embeddinggemma_jax import soup
real = os.replace
def replace(src, dst):
    if str(dst) == sys.argv[1]:  # everything written, the final rename not yet done
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
soup.make_soup(sys.argv[2:], sys.argv[1], progress=False)
"""


def test_killed_soup_leaves_nothing_that_looks_complete(runs, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(out), *map(str, runs["ingredients"])],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists() and not checkpoint.is_checkpoint(out)
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers == [".killed.partial"]  # the whole soup, under a name nothing reads as a run
    # The rerun clears the leftover and finishes.
    soup.make_soup(runs["ingredients"], out, progress=False, log=lambda _: None)
    assert checkpoint.is_checkpoint(out) and (out / soup.REPORT).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed"]
