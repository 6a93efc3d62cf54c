"""Masked-LM checkpoints in Hugging Face's ``BertForMaskedLM`` / ``RoFormerForMaskedLM`` layout.

A `MaskedLM` is an `Encoder` plus BERT's prediction head. HF stores it as the encoder's names
under ``bert.`` (``roformer.``) and the head under ``cls.predictions.``:

| ours | HF |
|---|---|
| ``head.transform.{kernel,bias}`` | ``cls.predictions.transform.dense.{weight,bias}`` |
| ``head.norm.{scale,bias}`` | ``cls.predictions.transform.LayerNorm.{weight,bias}`` |
| ``head.bias`` | ``cls.predictions.bias`` (HF ties ``decoder.bias`` to it) |
| tied to ``embed.word.embedding`` | ``cls.predictions.decoder.weight`` (not written: tied) |

So a directory written here loads in transformers with ``BertForMaskedLM.from_pretrained`` and
gives the same logits (tested), and `load_pretrained` reads its encoder (the ``cls.`` head of a
``*ForMaskedLM`` directory is recognised and skipped, not refused as unexpected). Loading is
all-or-nothing, as for the encoder: every head tensor must be present with the right shape.
"""

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike

from jaxformer.io import CheckpointError, write_safetensors
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.modules import named_leaves
from jaxformer.models.pretrained import (ROFORMER_SINUSOIDAL, from_hf_state_dict, sinusoidal_table,
                                         read_checkpoint, to_hf_state_dict)

HEAD_PREFIX = "cls.predictions."

# (our path under `head`, HF name under HEAD_PREFIX, transpose?)
_HEAD_TABLE = (
    ("transform.kernel", "transform.dense.weight", True),
    ("transform.bias", "transform.dense.bias", False),
    ("norm.scale", "transform.LayerNorm.weight", False),
    ("norm.bias", "transform.LayerNorm.bias", False),
    ("bias", "bias", False),
)


def _model_prefix(cfg: EncoderConfig) -> str:
    return "roformer." if cfg.position == "rope" else "bert."


def _architecture(cfg: EncoderConfig) -> str:
    return "RoFormerForMaskedLM" if cfg.position == "rope" else "BertForMaskedLM"


def save_masked_lm(model: MaskedLM, directory: str | Path, *, tokenizer: Any = None) -> Path:
    """Write ``config.json`` (``architectures: [BertForMaskedLM]``) and ``model.safetensors``.

    The encoder's tensors go under ``bert.`` (``roformer.``), the head under
    ``cls.predictions.``; the decoder weight is tied to the word embeddings and not written.
    A tokenizer with ``save(directory)`` is saved alongside when given.
    """
    if not isinstance(model, MaskedLM):
        raise TypeError(f"model: expected a MaskedLM, got {type(model).__name__}")
    cfg = model.encoder.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = cfg.to_hf_dict()
    config["architectures"] = [_architecture(cfg)]
    config["tie_word_embeddings"] = True
    config["torch_dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    prefix = _model_prefix(cfg)
    tensors = {prefix + k: v.astype(np.float32) for k, v in to_hf_state_dict(model.encoder).items()}
    if cfg.position == "rope":
        tensors[prefix + ROFORMER_SINUSOIDAL] = sinusoidal_table(
            cfg.max_position_embeddings, cfg.head_dim, base=cfg.rope_base).astype(np.float32)
    head = named_leaves(nnx.state(model.head, nnx.Param))
    for ours, theirs, transpose in _HEAD_TABLE:
        value = np.asarray(head[ours], dtype=np.float32)
        tensors[HEAD_PREFIX + theirs] = np.ascontiguousarray(value.T if transpose else value)
    write_safetensors(tensors, directory / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory


def masked_lm_from_tensors(cfg: EncoderConfig, tensors: dict[str, np.ndarray], *,
                           dtype: DTypeLike = jnp.float32, source: str = "checkpoint") -> MaskedLM:
    """A `MaskedLM` from HF-named tensors, all-or-nothing (encoder and head checked first)."""
    head_names = {HEAD_PREFIX + theirs for _, theirs, _ in _HEAD_TABLE}
    # Tied to the word embeddings; written by some exporters, never needed here.
    tied = {HEAD_PREFIX + "decoder.weight", HEAD_PREFIX + "decoder.bias"}
    abstract = nnx.eval_shape(lambda: MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)))
    want = {k: v.shape for k, v in named_leaves(nnx.state(abstract.head, nnx.Param)).items()}
    missing = sorted(head_names - set(tensors))
    bad = []
    for ours, theirs, transpose in _HEAD_TABLE:
        name = HEAD_PREFIX + theirs
        if name in tensors:
            got = tuple(np.shape(tensors[name]))
            got = got[::-1] if transpose else got
            if got != tuple(want[ours]):
                bad.append(f"{name}: expected {tuple(want[ours])}, got {got}")
    if missing or bad:
        lines = [f"{source}: the masked-LM head does not match the config; nothing was loaded."]
        if missing:
            lines.append(f"missing tensors: {', '.join(missing)}")
        if bad:
            lines.append("wrong shapes: " + "; ".join(bad))
        raise CheckpointError("\n".join(lines))
    encoder_tensors = {k: v for k, v in tensors.items()
                       if not (k in head_names or k in tied)}
    # Raises (whole-checkpoint CheckpointError) on any encoder mismatch or stray tensor.
    encoder = from_hf_state_dict(cfg, encoder_tensors, dtype=dtype, source=source)
    model = MaskedLM(encoder, rngs=nnx.Rngs(0))
    head_state = nnx.state(model.head, nnx.Param)
    pure = nnx.to_pure_dict(head_state)
    for ours, theirs, transpose in _HEAD_TABLE:
        value = np.asarray(tensors[HEAD_PREFIX + theirs])
        node = pure
        *parents, leaf = ours.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = jnp.asarray(value.T if transpose else value, dtype=dtype)
    nnx.replace_by_pure_dict(head_state, pure)
    nnx.update(model.head, head_state)
    return model


def load_masked_lm(directory: str | Path, *, allow_pickle: bool = False,
                   dtype: DTypeLike = jnp.float32, **config_overrides: Any) -> MaskedLM:
    """Load a ``BertForMaskedLM``-layout directory as a `MaskedLM` (encoder and head).

    Args:
      directory: an HF model directory with ``config.json`` and ``model.safetensors``.
      allow_pickle: read ``pytorch_model.bin`` when there is no safetensors file (opt-in: pickle
        can run code).
      dtype: parameter dtype.
      **config_overrides: `EncoderConfig` fields to override (e.g. ``hidden_dropout=0.0``).
    """
    directory = Path(directory)
    cfg, tensors = read_checkpoint(directory, allow_pickle=allow_pickle, **config_overrides)
    return masked_lm_from_tensors(cfg, tensors, dtype=dtype, source=str(directory))
