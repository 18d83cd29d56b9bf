"""Training entry point.

    python -m embeddinggemma_jax.main --config=configs/quickstart.py --workdir=runs/quickstart \
        [--config.key=value ...]

Runs the config's ``prepare`` step (if any; e.g. the quickstart builds its dataset and tokenizer),
then trains; resumes from the workdir's latest checkpoint when there is one. Exits with status 143 after
saving when stopped by SIGTERM (preemption), so schedulers restart it.

Several processes (one per host): run the same command in each, under a cluster JAX detects
(TPU pod, SLURM, Open MPI, Kubernetes) or with ``JAX_COORDINATOR_ADDRESS=host0:port``,
``JAX_NUM_PROCESSES=n`` and ``JAX_PROCESS_ID=i`` set (`parallel.initialize_distributed`); a
SIGTERM to any of them makes all save the same step and exit 143.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "experiment config file (configs/x.py or configs/x.py:variant)",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints and logs")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax(logging.Filter):
    """Orbax logs every file it writes at INFO; keep its warnings and errors only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.get_absl_handler().addFilter(_QuietOrbax())
    from embeddinggemma_jax.train.trainer import Trainer

    trainer = Trainer(_CONFIG.value, _WORKDIR.value)  # runs the config's prepare step first
    if trainer.prepared is not None:
        absl_logging.info("prepared: %s", trainer.prepared)
    summary = trainer.fit()
    trainer.close()
    if summary["preempted"]:
        sys.exit(143)


def run() -> None:
    from embeddinggemma_jax import cli

    cli.run_absl(main)


if __name__ == "__main__":
    run()
