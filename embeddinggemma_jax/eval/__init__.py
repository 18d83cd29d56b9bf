"""Evaluation, by concern:

metrics.py    MTEB-style metrics on embeddings
files.py      reading and checking task files (errors name the file, line and field)
tasks.py      the task types, their folder layouts and the encoding protocol
builtin.py    built-in tasks from real text that ships with Python and packages
registry.py   a task by built-in name or folder (`get_task`, `load_task`)
runner.py     tasks on an `Embedder` at several widths (`evaluate_embedder`)
mteb.py       adapters to run our models and tasks under MTEB
"""

from embeddinggemma_jax.eval.builtin import BUILTIN_TASKS, default_cache_dir
from embeddinggemma_jax.eval.files import TaskDataError
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
from embeddinggemma_jax.eval.registry import get_task, load_task
from embeddinggemma_jax.eval.runner import (
    default_dims,
    embedder_encode_fn,
    evaluate_embedder,
    format_table,
    plot_report,
)
from embeddinggemma_jax.eval.tasks import (
    TASK_TYPES,
    BitextMiningTask,
    ClassificationTask,
    ClusteringTask,
    PairClassificationTask,
    RerankingTask,
    RetrievalTask,
    STSTask,
    SummarizationTask,
    Task,
    TruncatingEncoder,
)

__all__ = [
    "BUILTIN_TASKS",
    "MAIN_SCORES",
    "TASK_TYPES",
    "BitextMiningTask",
    "ClassificationTask",
    "ClusteringTask",
    "PairClassificationTask",
    "RerankingTask",
    "RetrievalTask",
    "STSTask",
    "SummarizationTask",
    "Task",
    "TaskDataError",
    "TruncatingEncoder",
    "average_precision",
    "bitext_mining_scores",
    "classification_scores",
    "clustering_scores",
    "default_cache_dir",
    "default_dims",
    "embedder_encode_fn",
    "evaluate_embedder",
    "format_table",
    "get_task",
    "load_task",
    "pair_classification_scores",
    "plot_report",
    "reranking_scores",
    "retrieval_scores",
    "retrieval_scores_per_query",
    "sts_scores",
    "summarization_scores",
]
