"""python -m embeddinggemma_jax.data.build: builds named datasets; one-line errors."""

import pytest

from embeddinggemma_jax.data import build
from embeddinggemma_jax.data.mixtures import TASK_GROUPS


def test_every_builder_is_in_a_task_group():
    grouped = {name for names in TASK_GROUPS.values() for name in names}
    assert grouped == set(build.builders()) - set(build.EVAL_ONLY)


def test_cli_builds_then_reuses(tmp_path, capsys):
    argv = ["--dataset", "catalogs", "--output", str(tmp_path), "--max-records", "40"]
    assert build.main([*argv, "--max-eval-records", "20"]) == 0
    out = capsys.readouterr().out
    assert "catalogs (built in" in out and "train 40 records" in out
    assert len((tmp_path / "catalogs" / "train.jsonl").read_text().splitlines()) == 40
    assert build.main([*argv, "--max-eval-records", "20"]) == 0
    assert "catalogs (cached)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "catalogs,nope"], "error: --dataset: unknown dataset 'nope'; one of"),
        (["--dataset", "sympy", "--max-records", "0"], "error: --max-records: must be >= 1"),
        (["--dataset", "sympy", "--seed", "x"], "error: --seed: invalid int value"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        build.main([*argv, "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not any(tmp_path.iterdir())
