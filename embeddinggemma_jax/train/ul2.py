"""The UL2 adaptation stage: decoder-only Gemma 3 -> T5Gemma encoder-decoder -> the embedder's init.

Pieces a generic trainer plugs in (each a pure function):

  load_decoder_only(path)            Hugging Face Gemma 3 folder or GGUF file -> causal params
  init_ul2_params(config, rng, ...)  encoder-decoder params: T5Gemma init from a decoder-only
                                     model (balanced or unbalanced), or random
  make_ul2_loss_fn(config)           (params, batch, rng=None) -> (loss, metrics) on
                                     `data.ul2` batches: cross-entropy on decoder targets only
  with_cross_attention_warmup(tx, params, steps)
                                     only cross-attention trains for the first `steps` steps
  extract_encoder(source, config)    {"encoder": adapted encoder, "head": fresh head}: the
                                     `EmbeddingGemma` params the pre-finetuning stage starts from
  export_embedder_init(source, config, folder, tokenizer=...)
                                     the same as a sentence-transformers folder, for the
                                     pre-finetuning config's ``init_from``
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from embeddinggemma_jax.interop.huggingface import (
    load_hf_config,
    read_safetensors,
    transformer_params_from_hf,
)
from embeddinggemma_jax.model.config import ModelConfig
from embeddinggemma_jax.model.encoder_decoder import (
    EncoderDecoder,
    EncoderDecoderConfig,
    cross_attention_mask,
    init_encoder_decoder_params,
    t5gemma_init,
)
from embeddinggemma_jax.model.head import EmbeddingHead
from embeddinggemma_jax.model.model import param_shapes
from embeddinggemma_jax.model.transformer import Transformer

# transformers' Gemma3TextConfig defaults: released Gemma3ForConditionalGeneration config.json
# files omit every text_config key that equals them (e.g. num_attention_heads, head_dim).
GEMMA3_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
    "pad_token_id": 0,
}

UL2_BATCH_KEYS = (
    "encoder_input_ids",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_input_ids",
    "decoder_target_ids",
    "decoder_loss_mask",
    "decoder_segment_ids",
    "decoder_positions",
)


# -- decoder-only import --------------------------------------------------------------------------
def gemma3_text_config(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The Gemma 3 text config of a config.json (Gemma3ForCausalLM / Gemma3TextModel, or the
    text_config of Gemma3ForConditionalGeneration), missing keys filled with transformers'
    defaults."""
    hf = dict(hf)
    if "text_config" in hf:
        hf = {**(hf["text_config"] or {}), "model_type": "gemma3_text"}
    if hf.get("model_type") not in ("gemma3_text", "gemma3", None):
        raise ValueError(f"not a Gemma 3 config: model_type={hf.get('model_type')!r}")
    out = {**GEMMA3_TEXT_DEFAULTS, **hf, "model_type": "gemma3_text"}
    if "rope_parameters" in hf:  # the new rope format: the old keys' defaults must not mix in
        for key in ("rope_theta", "rope_local_base_freq"):
            if key not in hf:
                del out[key]
    return out


def load_decoder_only(path: str | Path, **config_overrides) -> tuple[ModelConfig, dict]:
    """A decoder-only Gemma 3 -> (causal ModelConfig, `Transformer` params, float32 numpy).

    `path`: a Hugging Face folder (Gemma3ForCausalLM, or Gemma3ForConditionalGeneration whose
    text part is taken) or a `.gguf` file (dequantised; needs the optional `gguf` package).
    """
    path = Path(path)
    overrides = {"bidirectional": False, **config_overrides}
    if path.is_file() and path.suffix.lower() == ".gguf":
        from embeddinggemma_jax.interop.gguf import load_gguf

        return load_gguf(path, **overrides)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a Hugging Face folder nor a .gguf file")
    config = ModelConfig.from_hf_config(gemma3_text_config(load_hf_config(path)), **overrides)
    return config, transformer_params_from_hf(read_safetensors(path), config)


# -- stage init -----------------------------------------------------------------------------------
def init_ul2_params(
    config: EncoderDecoderConfig,
    rng: jax.Array,
    decoder_only: str | Path | Mapping | None = None,
    *,
    decoder_source: str | Path | Mapping | None = None,
    cross_attention_init: str | None = None,
) -> dict:
    """Encoder-decoder params for the UL2 stage.

    decoder_only: None (random init), a `Transformer` params pytree, or a path for
      `load_decoder_only`; the encoder (and, unless `decoder_source` is given, the decoder) start
      from it (T5Gemma). decoder_source: the unbalanced setting's smaller decoder-only model.
    """
    if decoder_only is None:
        if decoder_source is not None:
            raise ValueError("decoder_source needs decoder_only (the encoder's source) too")
        return init_encoder_decoder_params(config, rng)

    def params_of(src):
        if src is None or isinstance(src, Mapping):
            return src
        return load_decoder_only(src)[1]

    return t5gemma_init(
        params_of(decoder_only),
        config,
        decoder_source_params=params_of(decoder_source),
        cross_attention_init=cross_attention_init,
        rng=rng,
    )


# -- loss -----------------------------------------------------------------------------------------
def ul2_loss(
    logits_btv: jax.Array,
    targets_bt: jax.Array,
    weights_bt: jax.Array,
    *,
    z_loss: float = 0.0,
    denoiser_ids_bt: jax.Array | None = None,
    num_denoisers: int = 0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token cross-entropy, float32, averaged over target tokens with weight > 0.

    z_loss: weight of mean(log Z ** 2) (T5's auxiliary loss; 0 = off). With `denoiser_ids_bt` and
    `num_denoisers`, metrics also hold per-denoiser summed loss and token counts (`ce_sum_by_
    denoiser`, `tokens_by_denoiser`, [num_denoisers]) so callers can average them over steps.

    Returns: (scalar loss, {"loss", "cross_entropy", "z_loss", "accuracy", "tokens", ...}).
    """
    logits = logits_btv.astype(jnp.float32)
    w = weights_bt.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_bt[..., None].astype(jnp.int32), -1)[..., 0]
    ce_bt = log_z - target_logit
    tokens = jnp.sum(w)
    denom = jnp.maximum(tokens, 1.0)
    ce = jnp.sum(ce_bt * w) / denom
    zl = jnp.sum(jnp.square(log_z) * w) / denom
    loss = ce + z_loss * zl
    correct = (jnp.argmax(logits, -1) == targets_bt).astype(jnp.float32)
    metrics = {
        "loss": loss,
        "cross_entropy": ce,
        "z_loss": zl,
        "accuracy": jnp.sum(correct * w) / denom,
        "tokens": tokens,
    }
    if denoiser_ids_bt is not None and num_denoisers:
        onehot = jax.nn.one_hot(denoiser_ids_bt, num_denoisers, dtype=jnp.float32) * w[..., None]
        metrics["ce_sum_by_denoiser"] = jnp.einsum("BT,BTM->M", ce_bt, onehot)
        metrics["tokens_by_denoiser"] = jnp.sum(onehot, axis=(0, 1))
    return loss, metrics


def _check_batch(batch: Mapping[str, Any]) -> None:
    missing = [k for k in UL2_BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"UL2 batch is missing {missing} (see data.ul2.pad_batch / pack_batch)")


def make_ul2_loss_fn(
    config: EncoderDecoderConfig, *, z_loss: float = 0.0, num_denoisers: int = 0
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """loss_fn(params, batch, rng=None) -> (loss, metrics) for `data.ul2` batches (padded or
    packed: segment ids and positions are used, loss only where `decoder_loss_mask` is 1)."""
    model = EncoderDecoder(config)

    def loss_fn(params, batch, rng=None):
        del rng  # Gemma has no dropout
        _check_batch(batch)
        logits = model.apply(
            {"params": params},
            batch["encoder_input_ids"],
            batch["decoder_input_ids"],
            batch["encoder_segment_ids"],
            batch["decoder_segment_ids"],
            batch["encoder_positions"],
            batch["decoder_positions"],
        )
        return ul2_loss(
            logits,
            batch["decoder_target_ids"],
            batch["decoder_loss_mask"],
            z_loss=z_loss,
            denoiser_ids_bt=batch.get("decoder_denoiser_ids"),
            num_denoisers=num_denoisers,
        )

    return loss_fn


# -- unbalanced warm-up ---------------------------------------------------------------------------
def _freeze_outside(mask: Any, steps: int) -> optax.GradientTransformation:
    """Zeroes every leaf where `mask` is False while fewer than `steps` updates have passed."""

    def init(params):
        del params
        return jnp.zeros([], jnp.int32)

    def update(updates, count, params=None):
        del params
        warm = count < steps
        updates = jax.tree.map(
            lambda u, m: u if m else jnp.where(warm, jnp.zeros_like(u), u), updates, mask
        )
        return updates, optax.safe_int32_increment(count)

    return optax.GradientTransformation(init, update)


def with_cross_attention_warmup(
    tx: optax.GradientTransformation, params: Mapping, steps: int
) -> optax.GradientTransformation:
    """`tx`, except that for the first `steps` calls only the decoder's cross-attention (and its
    norms) changes: gradients elsewhere are zeroed before `tx` (so its moments stay clean) and
    updates elsewhere after it (so weight decay does not move frozen weights either)."""
    if steps < 0:
        raise ValueError(f"warm-up steps must be >= 0, got {steps}")
    if steps == 0:
        return tx
    mask = cross_attention_mask(params)
    if not any(jax.tree.leaves(mask)):
        raise ValueError("params have no decoder cross-attention to warm up")
    return optax.chain(_freeze_outside(mask, steps), tx, _freeze_outside(mask, steps))


# -- hand-off to the embedder ---------------------------------------------------------------------
def _restore_checkpoint(path: Path) -> Any:
    """A pytree from an Orbax checkpoint: a trainer workdir (its ``checkpoints`` folder, latest
    step), a CheckpointManager root, a step directory (its ``params`` item when there is one), or
    an item directory."""
    import orbax.checkpoint as ocp

    def is_item(p: Path) -> bool:
        return (p / "_METADATA").exists() or (p / "manifest.ocdbt").exists()

    def restore(p: Path) -> Any:  # as host numpy arrays: independent of the saving topology
        ckptr = ocp.PyTreeCheckpointer()
        meta = ckptr.metadata(str(p))
        tree = getattr(getattr(meta, "item_metadata", None), "tree", meta)
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ckptr.restore(str(p), restore_args=args)

    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    if (path / "checkpoints").is_dir() and not is_item(path):
        path = path / "checkpoints"
    steps = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    if steps and not is_item(path):
        path = max(steps, key=lambda p: int(p.name))
    if is_item(path):
        return restore(path)
    if is_item(path / "params"):  # only the parameters, not the optimizer state
        return {"params": restore(path / "params")}
    items = {p.name: p for p in path.iterdir() if p.is_dir() and is_item(p)}
    if not items:
        raise ValueError(f"{path}: no Orbax checkpoint item found")
    return {name: restore(p) for name, p in items.items()}


def _find_encoder(tree: Any, where: str) -> Mapping:
    """The encoder params inside encoder-decoder params, a train state or a restored checkpoint."""
    if hasattr(tree, "params") and not isinstance(tree, Mapping):
        return _find_encoder(tree.params, f"{where}.params")
    if isinstance(tree, Mapping):
        if "encoder" in tree and "decoder" in tree:
            return tree["encoder"]
        for key in ("params", "state", "train_state", "default"):
            if key in tree:
                return _find_encoder(tree[key], f"{where}[{key!r}]")
    raise ValueError(
        f"{where}: no encoder-decoder params (a mapping with 'encoder' and 'decoder', possibly "
        "under 'params' / 'state')"
    )


def extract_encoder(
    source: str | Path | Mapping | Any,
    config: ModelConfig,
    rng: jax.Array | None = None,
) -> dict:
    """`EmbeddingGemma(config)` params whose encoder is the UL2-adapted encoder, with a freshly
    initialised head (from `rng`, default key 0).

    source: encoder-decoder params ({"encoder", "decoder"}), a train state / mapping holding them
      under "params", or an Orbax checkpoint directory of either.
    config: the embedder's ModelConfig (bidirectional; its encoder shape must match).

    Returns: {"encoder": float32 numpy arrays (copies), "head": float32 arrays}.
    """
    if not config.bidirectional:
        raise ValueError("extract_encoder: the embedder config must be bidirectional")
    where = "source"
    if isinstance(source, (str, Path)):
        where = str(source)
        source = _restore_checkpoint(Path(source))
    encoder = _find_encoder(source, where)
    want = param_shapes(config)["encoder"]
    got = dict(jax.tree_util.tree_flatten_with_path(encoder)[0])
    for key, spec in jax.tree_util.tree_flatten_with_path(want)[0]:
        if key not in got:
            raise ValueError(f"{where}: encoder has no {jax.tree_util.keystr(key)}")
        if tuple(np.shape(got[key])) != tuple(spec.shape):
            raise ValueError(
                f"{where}: encoder{jax.tree_util.keystr(key)} has shape {np.shape(got[key])}, "
                f"config expects {tuple(spec.shape)}"
            )
    if len(got) != len(jax.tree.leaves(want)):
        raise ValueError(f"{where}: encoder has parameters the config does not know")
    rng = jax.random.key(0) if rng is None else rng
    x = jnp.zeros((1, 1, config.embed_dim), jnp.float32)
    head = EmbeddingHead(config).init(rng, x, jnp.ones((1, 1), bool))["params"]
    return {
        "encoder": jax.tree.map(lambda a: np.array(a, np.float32), encoder),
        "head": nn.meta.unbox(head),
    }


def export_embedder_init(
    source: str | Path | Mapping | Any,
    config: ModelConfig,
    folder: str | Path,
    *,
    tokenizer: str | Path,
    rng: jax.Array | None = None,
    prompts: Mapping[str, str] | None = None,
) -> Path:
    """`extract_encoder` written as a sentence-transformers folder: the path the pre-finetuning
    stage's ``init_from`` takes. tokenizer: a SentencePiece tokenizer.model (or HF tokenizer
    folder) copied beside the weights; prompts: default the checkpoint's prompt table."""
    from embeddinggemma_jax.interop.sentence_transformers import save_sentence_transformer
    from embeddinggemma_jax.text.prompts import DEFAULT_PROMPTS

    params = extract_encoder(source, config, rng)
    return save_sentence_transformer(
        folder,
        params,
        config,
        prompts=dict(DEFAULT_PROMPTS if prompts is None else prompts),
        max_seq_length=config.max_length,
        tokenizer_source=tokenizer,
    )


def decoder_only_logits(
    config: ModelConfig, params: Mapping, tokens_bt: Any, mask_bt: Any | None = None
) -> jax.Array:
    """Next-token logits [B, T, V] float32 of a decoder-only model run causally (jitted)."""
    if config.bidirectional:
        raise ValueError("decoder_only_logits needs a causal config (bidirectional=False)")
    tokens_bt = jnp.asarray(tokens_bt)
    mask_bt = tokens_bt != config.pad_id if mask_bt is None else jnp.asarray(mask_bt, bool)
    return _decoder_only_logits(config, params, tokens_bt, mask_bt)


@functools.partial(jax.jit, static_argnums=0)
def _decoder_only_logits(config, params, tokens_bt, mask_bt):
    model = Transformer(config)
    x_btd = model.apply({"params": params}, tokens_bt, mask_bt)
    return model.apply({"params": params}, x_btd, method=Transformer.logits)


def denoiser_names(ul2_config: Any) -> Sequence[str]:
    """Names of a `data.ul2.UL2Config`'s denoisers, in `decoder_denoiser_ids` order."""
    return tuple(d.name for d in ul2_config.denoisers)
