"""The `mteb` package's encoder protocol for our `Embedder`, and local tasks as MTEB tasks.

    import mteb
    from embeddinggemma_jax.eval.mteb import MTEBEncoder

    model = MTEBEncoder("path/or/hub-id/or/orbax-dir", dim=256)
    results = mteb.evaluate(model, tasks=mteb.get_tasks(tasks=["STSBenchmark"]))

Prompts: texts that MTEB marks as documents (the corpus of retrieval and reranking tasks) get
EmbeddingGemma's document prompt with their title, `title: {title | none} | text: {body}` (the
format of the model card and of MTEB's EmbeddingGemma recipe); everything else gets the prompt
MTEB's own rule picks from the model's prompt table: "<task name>-<query|document>", "<task
name>", "<task type>-<query|document>", "<task type>", then "<query|document>". With
EmbeddingGemma's table that is the task type's prompt ("Retrieval" -> "task: search result |
query: ", "STS" -> "task: sentence similarity | query: ", ...), the same choice
`eval.tasks` makes, so both evaluators score the same embeddings.

`to_mteb_task(task)` wraps a local retrieval or STS task (`eval.tasks`) as an MTEB task whose data
never leaves the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

from embeddinggemma_jax.eval import tasks as local
from embeddinggemma_jax.text.prompts import document_prompt

__all__ = ["MTEBEncoder", "to_mteb_task"]


class MTEBEncoder(AbsEncoder):
    """An `Embedder` behind MTEB's `EncoderProtocol`.

    Args:
      model: an `Embedder`, or anything `Embedder.from_pretrained` loads.
      revision: unused (MTEB's loader signature); recorded in the model metadata.
      dim: Matryoshka width of the embeddings (default: the model's full width).
      batch_size: default batch size (MTEB's `encode_kwargs["batch_size"]` overrides it).
      name: model name in MTEB's results ("organisation/model").
      load_kwargs: passed to `Embedder.from_pretrained` (dtype, max_length, ...).
    """

    def __init__(
        self,
        model,
        revision: str | None = None,
        *,
        dim: int | None = None,
        batch_size: int = 32,
        name: str | None = None,
        device: str | None = None,
        **load_kwargs: Any,
    ):
        from embeddinggemma_jax.embedder import Embedder

        if not isinstance(model, Embedder):
            source = str(model)
            model = Embedder.from_pretrained(model, **load_kwargs)
        else:
            source = "embedder"
        full = model.config.output_dim
        if dim is not None and not 0 < dim <= full:
            raise ValueError(f"dim must be in 1..{full}, got {dim}")
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        self.model_prompts = dict(model.prompts)
        if name is None:
            name = f"embeddinggemma-jax/{Path(source).name or 'model'}"
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name=name,
            revision=revision,
            release_date=None,
            languages=None,
            n_parameters=None,
            memory_usage_mb=None,
            max_tokens=model.max_length,
            embed_dim=dim or full,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=["JAX"],
            similarity_fn_name="cosine",
            use_instructions=True,
            training_datasets=None,
        )

    def encode(
        self,
        inputs,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts: list[str] = []
        if prompt_type == PromptType.document:
            # MTEB's corpus batches carry "text" = "{title} {body}", plus "body" and "title".
            for batch in inputs:
                bodies = batch.get("body", batch["text"])
                titles = batch.get("title") or [None] * len(bodies)
                texts += [document_prompt(t) + b for t, b in zip(titles, bodies, strict=True)]
            prompt_name = None
        else:
            for batch in inputs:
                texts += list(batch["text"])
            prompt_name = get_prompt_name(self.model_prompts, task_metadata, prompt_type)
        return self.model.encode(
            texts,
            prompt_name=prompt_name,
            dim=self.dim,
            batch_size=int(kwargs.get("batch_size") or self.batch_size),
            show_progress=bool(kwargs.get("show_progress_bar", False)),
        )


def _metadata(task: local.Task, description: str) -> TaskMetadata:
    return TaskMetadata(
        name=task.name,
        description=description,
        reference=None,
        dataset={"path": f"local/{task.name}", "revision": "local"},
        type=task.type,
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score=task.main_score,
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


def to_mteb_task(task: local.Task):
    """An MTEB task holding `task`'s data (Retrieval or STS), for `mteb.evaluate` offline.

    For retrieval the MTEB task keeps MTEB's own settings (k_values up to 1000, no queries with
    empty qrels); the query prompt is whatever MTEB's rule picks for the task type.
    """
    from datasets import Dataset

    if isinstance(task, local.RetrievalTask) and type(task) is local.RetrievalTask:
        corpus = Dataset.from_list(
            [{"id": i, "title": t, "text": x} for i, (t, x) in task.corpus.items()]
        )
        queries = Dataset.from_list([{"id": i, "text": t} for i, t in task.queries.items()])
        qrels = {q: dict(d) for q, d in task.qrels.items() if q in task.queries}

        class LocalRetrieval(AbsTaskRetrieval):
            metadata = _metadata(task, "Local retrieval task (embeddinggemma_jax.eval.tasks).")

            def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
                split = RetrievalSplitData(
                    corpus=corpus, queries=queries, relevant_docs=qrels, top_ranked=None
                )
                self.dataset = {"default": {"test": split}}
                self.data_loaded = True

        return LocalRetrieval()

    if isinstance(task, local.STSTask):
        scores = list(task.scores)
        lo, hi = min(scores), max(scores)

        class LocalSTS(AbsTaskSTS):
            metadata = _metadata(task, "Local STS task (embeddinggemma_jax.eval.tasks).")
            min_score, max_score = lo, hi

            def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
                from datasets import DatasetDict

                data = {"sentence1": list(task.sentence1), "sentence2": list(task.sentence2)}
                self.dataset = DatasetDict({"test": Dataset.from_dict({**data, "score": scores})})
                self.data_loaded = True

        return LocalSTS()
    raise NotImplementedError(f"to_mteb_task supports Retrieval and STS tasks, not {task.type}")
