"""Hugging Face checkpoints <-> `Encoder`: the name table, shape checks, load and save.

The mapping lives here (models), not in io: io turns files into named numpy arrays and knows
no model. Loading is all-or-nothing: every expected tensor must be present with the right
shape, and no unexpected tensor may remain, before a single parameter is set.

HF `nn.Linear` stores ``weight: [out, in]``; our `Dense.kernel` is ``[in, out]``, so linear
weights are transposed on the way in and out. LayerNorm ``weight``/``bias`` are our
``scale``/``bias``; old TF-converted checkpoints spell them ``gamma``/``beta``.

`BertModel` and `RoFormerModel` share every layer name. RoFormer has no position table and no
pooler, may have ``embeddings_project`` (when ``embedding_size != hidden_size``), and keeps its
rotary angles as a frozen buffer ``encoder.embed_positions.weight`` ``[P, D]`` laid out as
``[sin(p θ_0..θ_{D/2-1}) | cos(p θ_0..θ_{D/2-1})]``: not a parameter of ours, but checked on
load against the table our RoPE kernel implies, and written on save (transformers reports it
missing otherwise).
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
from jaxformer.models.modules import named_leaves
from jaxformer.rope import apply_rope

# Tensors HF keeps as buffers, not parameters: accepted and ignored.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# HF RoFormer's sinusoidal buffer; checked against the RoPE kernel when present.
ROFORMER_SINUSOIDAL = "encoder.embed_positions.weight"
# Prefixes that HF task models put before the encoder's names.
_MODEL_PREFIXES = ("bert.", "roformer.")
# fp32 angles p * θ_i lose ~p * 6e-8 rad against HF's float64 table: 1e-4 at p = 1536. A
# wrong base or pairing is off by O(1).
_SINUSOIDAL_ATOL = 1e-3


def _linear(ours: str, theirs: str) -> list[tuple[str, str, bool]]:
    return [(f"{ours}.kernel", f"{theirs}.weight", True), (f"{ours}.bias", f"{theirs}.bias", False)]


def _norm(ours: str, theirs: str) -> list[tuple[str, str, bool]]:
    return [(f"{ours}.scale", f"{theirs}.weight", False), (f"{ours}.bias", f"{theirs}.bias", False)]


def hf_name_table(cfg: EncoderConfig) -> list[tuple[str, str, bool]]:
    """``(our dotted path, HF name, transpose?)`` for every parameter of an encoder with `cfg`."""
    table = [("embed.word.embedding", "embeddings.word_embeddings.weight", False)]
    if cfg.position == "absolute":
        table.append(("embed.position.embedding", "embeddings.position_embeddings.weight", False))
    if cfg.type_vocab_size > 0:
        table.append(("embed.token_type.embedding", "embeddings.token_type_embeddings.weight", False))
    table += _norm("embed.norm", "embeddings.LayerNorm")
    if cfg.embedding_width != cfg.hidden_size:
        table += _linear("embed.project", "embeddings_project")
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


def sinusoidal_table(num_positions: int, head_dim: int, *, base: float = 10000.0) -> np.ndarray:
    """HF RoFormer's ``encoder.embed_positions.weight`` ``[P, D]``, in float64 as HF builds it:
    ``[sin(p θ_i) for i < D/2 | cos(p θ_i) for i < D/2]`` with ``θ_i = base^(-2i/D)``."""
    angles = np.arange(num_positions, dtype=np.float64)[:, None] * np.power(
        float(base), -2.0 * np.arange(head_dim // 2, dtype=np.float64) / head_dim
    )
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def kernel_sinusoidal_table(cfg: EncoderConfig, num_positions: int) -> np.ndarray:
    """The same ``[P, D]`` table read off our RoPE kernel: rotating the unit vector ``(1, 0)``
    of every pair (as `cfg.rope_layout` pairs features) by position p gives ``(cos, sin)``."""
    d, half = cfg.head_dim, cfg.head_dim // 2
    first = np.arange(0, d, 2) if cfg.rope_layout == "interleaved" else np.arange(half)
    second = first + 1 if cfg.rope_layout == "interleaved" else first + half
    unit = np.zeros((1, num_positions, 1, d), np.float32)
    unit[..., first] = 1.0
    positions = jnp.arange(num_positions, dtype=jnp.int32)[None, :]
    out = np.asarray(apply_rope(jnp.asarray(unit), positions, layout=cfg.rope_layout,
                                base=cfg.rope_base))[0, :, 0, :]
    return np.concatenate([out[:, second], out[:, first]], axis=1)


def _check_sinusoidal(cfg: EncoderConfig, table: np.ndarray, source: str) -> None:
    """Refuse an HF RoFormer buffer that disagrees with the rotation our config applies."""
    want = (table.shape[0], cfg.head_dim)
    if cfg.position != "rope" or table.ndim != 2 or tuple(table.shape) != want:
        raise CheckpointError(
            f"{source}: {ROFORMER_SINUSOIDAL} has shape {tuple(table.shape)}; expected a "
            f"[P, D={cfg.head_dim}] RoPE table for a position='rope' config "
            f"(this config has position={cfg.position!r}); nothing was loaded."
        )
    err = float(np.max(np.abs(kernel_sinusoidal_table(cfg, table.shape[0]) - table), initial=0.0))
    if not err <= _SINUSOIDAL_ATOL:
        raise CheckpointError(
            f"{source}: {ROFORMER_SINUSOIDAL} differs from the RoPE angles of rope_base="
            f"{cfg.rope_base}, rope_layout={cfg.rope_layout!r} by up to {err:.3g} "
            f"(tolerance {_SINUSOIDAL_ATOL}); nothing was loaded."
        )


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
    if ROFORMER_SINUSOIDAL in tensors:
        _check_sinusoidal(cfg, np.asarray(tensors.pop(ROFORMER_SINUSOIDAL), np.float64), source)
    abstract = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract)
    expected_shapes = {name: leaf.shape for name, leaf in named_leaves(abstract_state).items()}
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
    """HF `BertModel` / `RoFormerModel` names and PyTorch layouts for every parameter of
    `model`, as numpy (parameters only: no RoFormer sinusoidal buffer)."""
    flat = named_leaves(nnx.state(model, nnx.Param))
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
    """Load an HF BERT or RoFormer directory (``config.json`` + ``model.safetensors``) as an
    `Encoder`; config.json's ``model_type`` (``"bert"`` / ``"roformer"``) picks the layout.

    Args:
      directory: an HF model directory.
      allow_pickle: read ``pytorch_model.bin`` when there is no safetensors file. Pickle can run
        code, so it is refused unless you opt in. (The public Chinese RoFormer checkpoints ship
        only ``pytorch_model.bin``.)
      ignore_prefixes: HF names to skip. The ``cls.`` head of a directory whose config.json
        names a ``*ForMaskedLM`` / ``*ForPreTraining`` architecture is skipped automatically.
      dtype: parameter dtype.
      **config_overrides: fields of `EncoderConfig` to override (e.g. ``hidden_dropout=0.0``).
    """
    directory = Path(directory)
    cfg, tensors = read_checkpoint(directory, allow_pickle=allow_pickle, **config_overrides)
    if _has_pretraining_head(directory / "config.json"):
        # A *ForMaskedLM / *ForPreTraining directory: its "cls." head is expected, not stray.
        ignore_prefixes = (*ignore_prefixes, "cls.")
    return from_hf_state_dict(cfg, tensors, ignore_prefixes=ignore_prefixes, dtype=dtype,
                              source=str(directory))


def read_checkpoint(directory: Path, *, allow_pickle: bool = False, **config_overrides: Any
                    ) -> tuple[EncoderConfig, dict[str, np.ndarray]]:
    """The `EncoderConfig` (``config.json`` plus overrides; no pooler when the checkpoint has
    none) and the named tensors of an HF model directory."""
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist")
    cfg = EncoderConfig.from_hf(directory / "config.json", **config_overrides)
    tensors = read_state_dict(directory, allow_pickle=allow_pickle)
    return without_absent_pooler(cfg, tensors, config_overrides), tensors


def without_absent_pooler(cfg: EncoderConfig, tensors: dict[str, np.ndarray],
                          overrides: dict[str, Any]) -> EncoderConfig:
    """``use_pooler=False`` when the checkpoint has no pooler (HF's ``BertForMaskedLM`` is built
    with ``add_pooling_layer=False``) and the caller did not ask for one explicitly."""
    if "use_pooler" in overrides or not cfg.use_pooler:
        return cfg
    if any(name.endswith("pooler.dense.weight") for name in tensors):
        return cfg
    return cfg.replace(use_pooler=False)


def _has_pretraining_head(config_path: Path) -> bool:
    """config.json's ``architectures`` names a task model whose head HF keeps under ``cls.``."""
    try:
        arch = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith(("ForMaskedLM", "ForPreTraining")) for a in arch)


def save_pretrained(model: Encoder, directory: str | Path, *, tokenizer: Any = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that transformers' `BertModel` (or
    `RoFormerModel`, for ``position="rope"``) loads with no missing or unexpected keys.

    A tokenizer with a ``save(directory)`` method (`jaxformer.io.WordPieceTokenizer`) is saved
    alongside when given.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_dict()
    config["torch_dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tensors = {k: v.astype(np.float32) for k, v in to_hf_state_dict(model).items()}
    if model.config.position == "rope":
        cfg = model.config
        tensors[ROFORMER_SINUSOIDAL] = sinusoidal_table(
            cfg.max_position_embeddings, cfg.head_dim, base=cfg.rope_base).astype(np.float32)
    write_safetensors(tensors, directory / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(directory)
    return directory
