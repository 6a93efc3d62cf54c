"""Hugging Face checkpoints <-> `Encoder`: the name table, shape checks, load and save.

The mapping lives here (models), not in io: io turns files into named numpy arrays and knows
no model. Loading is all-or-nothing: every expected tensor must be present with the right
shape, and no unexpected tensor may remain, before a single parameter is set.

HF `nn.Linear` stores ``weight: [out, in]``; our `Dense.kernel` is ``[in, out]``, so linear
weights are transposed on the way in and out. LayerNorm ``weight``/``bias`` are our
``scale``/``bias``; old TF-converted checkpoints spell them ``gamma``/``beta``.
"""


import json
from pathlib import Path
from typing import Any

import jax
from jax.typing import DTypeLike
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.io import CheckpointError, read_state_dict, write_safetensors
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder

# Tensors HF keeps as buffers, not parameters: accepted and ignored.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# Prefixes that HF task models put before the encoder's names.
_MODEL_PREFIXES = ("bert.",)


def _linear(ours: str, theirs: str) -> list[tuple[str, str, bool]]:
    return [(f"{ours}.kernel", f"{theirs}.weight", True), (f"{ours}.bias", f"{theirs}.bias", False)]


def _norm(ours: str, theirs: str) -> list[tuple[str, str, bool]]:
    return [(f"{ours}.scale", f"{theirs}.weight", False), (f"{ours}.bias", f"{theirs}.bias", False)]


def hf_name_table(cfg: EncoderConfig) -> list[tuple[str, str, bool]]:
    """``(our dotted path, HF name, transpose?)`` for every parameter of an encoder with `cfg`."""
    table = [
        ("embed.word.embedding", "embeddings.word_embeddings.weight", False),
        ("embed.position.embedding", "embeddings.position_embeddings.weight", False),
    ]
    if cfg.type_vocab_size > 0:
        table.append(("embed.token_type.embedding", "embeddings.token_type_embeddings.weight", False))
    table += _norm("embed.norm", "embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        ours, theirs = f"blocks.{i}", f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            table += _linear(f"{ours}.attention.{proj}", f"{theirs}.attention.self.{proj}")
        table += _linear(f"{ours}.attention.output", f"{theirs}.attention.output.dense")
        table += _norm(f"{ours}.attention_norm", f"{theirs}.attention.output.LayerNorm")
        table += _linear(f"{ours}.ffn.intermediate", f"{theirs}.intermediate.dense")
        table += _linear(f"{ours}.ffn.output", f"{theirs}.output.dense")
        table += _norm(f"{ours}.ffn_norm", f"{theirs}.output.LayerNorm")
    if cfg.norm == "pre":
        table += _norm("final_norm", "encoder.final_layer_norm")
    if cfg.use_pooler:
        table += _linear("pooler.dense", "pooler.dense")
    return table


def _canonical_names(
    tensors: dict[str, np.ndarray], ignore_prefixes: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Strip a task-model prefix, rename gamma/beta, drop buffers; return (kept, ignored)."""
    names = list(tensors)
    for prefix in _MODEL_PREFIXES:
        if names and sum(n.startswith(prefix) for n in names) >= len(names) // 2:
            tensors = {(n[len(prefix):] if n.startswith(prefix) else n): v for n, v in tensors.items()}
            break
    kept, ignored = {}, []
    for name, value in tensors.items():
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        if name in _BUFFERS or any(name.startswith(p) for p in ignore_prefixes):
            ignored.append(name)
        else:
            kept[name] = value
    return kept, ignored


def _set_path(tree: dict[Any, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``dotted="a.b.c"``; list entries have int keys."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[leaf] = value


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def from_hf_state_dict(
    cfg: EncoderConfig,
    tensors: dict[str, np.ndarray],
    *,
    ignore_prefixes: tuple[str, ...] = (),
    dtype: DTypeLike = jnp.float32,
    source: str = "checkpoint",
) -> Encoder:
    """Build an `Encoder` from HF-named tensors, refusing any mismatch as a whole.

    Raises:
      CheckpointError: listing every missing tensor, every unexpected tensor and every wrong
        shape at once. No parameter is set unless all of them check out.
    """
    tensors, _ = _canonical_names(tensors, tuple(ignore_prefixes))
    abstract = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    expected_shapes = {
        ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(abstract_state))[0]
    }
    table = hf_name_table(cfg)
    missing = [theirs for _, theirs, _ in table if theirs not in tensors]
    unexpected = sorted(set(tensors) - {theirs for _, theirs, _ in table})
    bad_shapes = []
    for ours, theirs, transpose in table:
        if theirs not in tensors:
            continue
        got = tuple(tensors[theirs].shape[::-1] if transpose else tensors[theirs].shape)
        want = tuple(expected_shapes[ours])
        if got != want:
            layout = " (transposed from [out, in])" if transpose else ""
            bad_shapes.append(f"{theirs}: expected {want}{layout}, got {tuple(tensors[theirs].shape)}")
    if missing or unexpected or bad_shapes:
        lines = [f"{source} does not match the encoder config; nothing was loaded."]
        if missing:
            lines.append(f"missing tensors: {_preview(missing)}")
        if unexpected:
            hint = ""
            if any(n.startswith("cls.") for n in unexpected):
                hint = " (pretraining heads: pass ignore_prefixes=('cls.',) to load the encoder only)"
            lines.append(f"unexpected tensors: {_preview(unexpected)}{hint}")
        if bad_shapes:
            lines.append("wrong shapes: " + "; ".join(bad_shapes[:12]))
        raise CheckpointError("\n".join(lines))
    pure = nnx.to_pure_dict(abstract_state)
    for ours, theirs, transpose in table:
        value = np.asarray(tensors[theirs])
        value = value.T if transpose else value
        _set_path(pure, ours, jnp.asarray(value, dtype=dtype))
    nnx.replace_by_pure_dict(abstract_state, pure)
    return nnx.merge(graphdef, abstract_state)


def to_hf_state_dict(model: Encoder) -> dict[str, np.ndarray]:
    """HF `BertModel` names and PyTorch layouts for every parameter of `model`, as numpy."""
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat = {
        ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(pure)[0]
    }
    out = {}
    for ours, theirs, transpose in hf_name_table(model.config):
        value = np.asarray(flat[ours])
        out[theirs] = np.ascontiguousarray(value.T if transpose else value)
    return out


def load_pretrained(
    directory: str | Path,
    *,
    allow_pickle: bool = False,
    ignore_prefixes: tuple[str, ...] = (),
    dtype: DTypeLike = jnp.float32,
    **config_overrides: Any,
) -> Encoder:
    """Load an HF BERT directory (``config.json`` + ``model.safetensors``) as an `Encoder`.

    Args:
      directory: an HF model directory.
      allow_pickle: read ``pytorch_model.bin`` when there is no safetensors file. Pickle can run
        code, so it is refused unless you opt in.
      ignore_prefixes: HF names to skip, e.g. ``("cls.",)`` for a BertForPreTraining checkpoint.
      dtype: parameter dtype.
      **config_overrides: fields of `EncoderConfig` to override (e.g. ``hidden_dropout=0.0``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    cfg = EncoderConfig.from_hf(directory / "config.json", **config_overrides)
    tensors = read_state_dict(directory, allow_pickle=allow_pickle)
    return from_hf_state_dict(cfg, tensors, ignore_prefixes=ignore_prefixes, dtype=dtype,
                              source=str(directory))


def save_pretrained(model: Encoder, directory: str | Path, *, tokenizer: Any = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that transformers' `BertModel` loads.

    A tokenizer with a ``save(directory)`` method (`jaxformer.io.WordPieceTokenizer`) is saved
    alongside when given.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_dict()
    config["torch_dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tensors = {k: v.astype(np.float32) for k, v in to_hf_state_dict(model).items()}
    write_safetensors(tensors, directory / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
