"""Prompts: the table in code equals the checkpoint's, folder loading, resolution and titles."""

import json

import pytest

from embeddinggemma_jax.text import (
    DEFAULT_PROMPTS,
    apply_document_prompts,
    apply_prompt,
    document_prompt,
    load_prompts,
    resolve_prompt,
)
from embeddinggemma_jax.text.prompts import PROMPTS_FILENAME


@pytest.mark.slow
def test_default_prompts_equal_the_checkpoint_table(real_checkpoint):
    config = json.loads((real_checkpoint / PROMPTS_FILENAME).read_text(encoding="utf-8"))
    assert DEFAULT_PROMPTS == config["prompts"]
    assert list(DEFAULT_PROMPTS) == list(config["prompts"])
    assert load_prompts(real_checkpoint) == config["prompts"]


def test_default_prompts_cover_query_document_and_task_types():
    names = {"query", "document", "Retrieval-query", "Retrieval-document", "STS", "Clustering"}
    names |= {"Classification", "BitextMining", "InstructionRetrieval", "Reranking"}
    names |= {"MultilabelClassification", "PairClassification", "Retrieval", "Summarization"}
    assert set(DEFAULT_PROMPTS) == names
    assert DEFAULT_PROMPTS["document"] == document_prompt(None)
    assert DEFAULT_PROMPTS["Retrieval-document"] == DEFAULT_PROMPTS["document"]
    assert DEFAULT_PROMPTS["Retrieval-query"] == DEFAULT_PROMPTS["query"]


def _write_config(folder, config) -> None:
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / PROMPTS_FILENAME).write_text(text, encoding="utf-8")


def test_load_prompts_from_folder(tmp_path):
    assert load_prompts(tmp_path) == DEFAULT_PROMPTS  # no config file
    loaded = load_prompts(tmp_path)
    loaded["query"] = "changed"
    assert DEFAULT_PROMPTS["query"] != "changed"  # a copy, not the shared table

    _write_config(tmp_path, {"model_type": "SentenceTransformer"})  # no "prompts" entry
    assert load_prompts(tmp_path) == DEFAULT_PROMPTS

    custom = {"query": "q: ", "passage": "p: "}
    _write_config(tmp_path, {"prompts": custom, "default_prompt_name": None})
    assert load_prompts(tmp_path) == custom

    _write_config(tmp_path, {"prompts": {}})
    assert load_prompts(tmp_path) == {}


def test_load_prompts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_prompts(tmp_path / "nowhere")
    _write_config(tmp_path, '{"prompts": {"query": "q: ",}')
    with pytest.raises(ValueError, match=f"{PROMPTS_FILENAME}: invalid JSON at line 1"):
        load_prompts(tmp_path)
    _write_config(tmp_path, {"prompts": ["q: "]})
    with pytest.raises(ValueError, match="'prompts' must be an object"):
        load_prompts(tmp_path)
    _write_config(tmp_path, {"prompts": {"query": 3}})
    with pytest.raises(ValueError, match=r"prompts\['query'\] must be a string"):
        load_prompts(tmp_path)


def test_document_prompt():
    assert document_prompt("Pride and Prejudice") == "title: Pride and Prejudice | text: "
    for missing in (None, "", "   "):
        assert document_prompt(missing) == "title: none | text: "
    with pytest.raises(TypeError, match="title must be str or None"):
        document_prompt(3)


def test_resolve_prompt():
    assert resolve_prompt(DEFAULT_PROMPTS) == ""
    assert resolve_prompt(DEFAULT_PROMPTS, prompt_name="STS") == DEFAULT_PROMPTS["STS"]
    assert resolve_prompt(DEFAULT_PROMPTS, prompt="custom: ") == "custom: "
    assert resolve_prompt(DEFAULT_PROMPTS, prompt="") == ""
    assert resolve_prompt(DEFAULT_PROMPTS, default_prompt_name="query") == DEFAULT_PROMPTS["query"]
    named = resolve_prompt(DEFAULT_PROMPTS, prompt_name="document", default_prompt_name="query")
    assert named == DEFAULT_PROMPTS["document"]
    with pytest.raises(KeyError, match="'nope'.*available prompt names: BitextMining, .*query"):
        resolve_prompt(DEFAULT_PROMPTS, prompt_name="nope")
    with pytest.raises(KeyError, match=r"\(none\)"):
        resolve_prompt({}, prompt_name="query")
    with pytest.raises(ValueError, match="not both"):
        resolve_prompt(DEFAULT_PROMPTS, prompt_name="query", prompt="x")
    with pytest.raises(TypeError, match="prompt must be str"):
        resolve_prompt(DEFAULT_PROMPTS, prompt=1)


def test_apply_prompt():
    prompt = DEFAULT_PROMPTS["query"]
    assert apply_prompt(prompt, ["a", ""]) == [prompt + "a", prompt]
    assert apply_prompt("", ("x",)) == ["x"]
    assert apply_prompt(prompt, []) == []
    with pytest.raises(TypeError, match="single str"):
        apply_prompt(prompt, "text")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got NoneType"):
        apply_prompt(prompt, ["a", None])
    with pytest.raises(TypeError, match="prompt must be str"):
        apply_prompt(None, ["a"])


def test_apply_document_prompts():
    texts = ["body one", "body two", "body three"]
    assert apply_document_prompts(texts) == [document_prompt(None) + t for t in texts]
    titled = apply_document_prompts(texts, ["First", None, ""])
    assert titled == [
        document_prompt("First") + "body one",
        document_prompt(None) + "body two",
        document_prompt(None) + "body three",
    ]
    with pytest.raises(ValueError, match="3 texts but 2 titles"):
        apply_document_prompts(texts, ["a", "b"])
    with pytest.raises(TypeError, match="titles must be a sequence"):
        apply_document_prompts(texts, "title")
    with pytest.raises(TypeError, match=r"texts\[0\] must be str"):
        apply_document_prompts([1], ["t"])
