"""Evaluation: MTEB-style metrics (`metrics`) and tasks read from local files (`tasks`)."""

from embeddinggemma_jax.eval.metrics import (
    MAIN_SCORES,
    average_precision,
    bitext_mining_scores,
    classification_scores,
    clustering_scores,
    pair_classification_scores,
    reranking_scores,
    retrieval_scores,
    retrieval_scores_per_query,
    sts_scores,
    summarization_scores,
)
from embeddinggemma_jax.eval.tasks import (
    BUILTIN_TASKS,
    Task,
    TaskDataError,
    TruncatingEncoder,
    get_task,
    load_task,
)

__all__ = [
    "BUILTIN_TASKS",
    "MAIN_SCORES",
    "Task",
    "TaskDataError",
    "TruncatingEncoder",
    "get_task",
    "load_task",
    "average_precision",
    "bitext_mining_scores",
    "classification_scores",
    "clustering_scores",
    "pair_classification_scores",
    "reranking_scores",
    "retrieval_scores",
    "retrieval_scores_per_query",
    "sts_scores",
    "summarization_scores",
]
