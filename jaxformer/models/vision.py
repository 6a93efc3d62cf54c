"""A ViT-style image classifier built from the encoder's own `Block`, with 2D positions.

Shape letters: B batch, E width, C classes (of the classifier), N image channels, G_h x G_w the
patch grid, T = G_h * G_w patch tokens, A = 2 position axes (row, col).

The position scheme is a config value (``VisionConfig.position``), never a new block class:

- ``"absolute"``: a learned table ``[G_h, G_w, E]`` for the training grid, added to the patch
  embeddings; on another grid it is resized bilinearly with `jax.image.resize` (the usual ViT
  fine-tuning recipe; identity at the training grid).
- ``"rope"``: 2D axial RoPE (Su's post 8397): the blocks rotate q and k by positions
  ``[1, T, 2]`` = (row, col) of each patch, the head dim split into equal halves (rows first).
- ``"rope_mixed"``: RoPE-Mixed (Heo et al. 2024, "Rotary Position Embedding for Vision
  Transformer"): every layer learns frequencies ``[H, 2, D/2]`` (`rope_mixed_init`), so a
  pair's angle is ``row * F[h, 0, i] + col * F[h, 1, i]``.

No CLS token: the final tokens are LayerNorm-ed and mean-pooled, then one Dense gives logits.

RoPE positions on a grid other than the training one (``rope_positions``): ``"index"`` (the
default, and Heo et al.'s setting) uses the integer (row, col), so a larger grid reaches
relative distances never seen in training (extrapolation); ``"extent"`` scales them by
``train_grid / grid`` so that the image spans the same position range as in training
(interpolation, like the absolute table's resize).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer import functional as F
from jaxformer.models.block_stack import BlockStack
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Block
from jaxformer.models.modules import Dense, LayerNorm

VISION_POSITIONS = ("absolute", "rope", "rope_mixed")
ROPE_POSITION_MODES = ("index", "extent")
# Default RoPE bases: 100 for axial 2D RoPE on small grids (a common ViT choice), 10 for
# RoPE-Mixed (Heo et al.'s theta).
DEFAULT_ROPE_BASE = {"rope": 100.0, "rope_mixed": 10.0}


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"VisionConfig.{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class VisionConfig:
    """Hyperparameters of `VisionEncoder`.

    Attributes:
      image_size: side of the (square) training image in pixels; the training grid is
        ``image_size // patch_size`` per side.
      channels: N, image channels (last axis of the input).
      patch_size: side of a square patch in pixels; must divide ``image_size``.
      num_classes: C, classifier outputs.
      position: ``"absolute"``, ``"rope"`` or ``"rope_mixed"`` (module doc).
      encoder: widths, depth, norm placement and dropout of the blocks. Its ``position``,
        ``rope_axes`` and ``rope_base`` are overridden from this config (`block_config`);
        vocabulary and segment fields are unused.
      rope_base: RoPE base (``"rope"``) or RoPE-Mixed init base; None = 100 / 10.
      rope_positions: ``"index"`` or ``"extent"``: how patch positions are numbered on a grid
        other than the training grid (module doc). Ignored for ``"absolute"``.
    """

    image_size: int
    channels: int
    patch_size: int
    num_classes: int
    position: str = "rope"
    encoder: EncoderConfig = dataclasses.field(default_factory=lambda: EncoderConfig.tiny())
    rope_base: float | None = None
    rope_positions: str = "index"

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "patch_size", "num_classes"):
            _positive_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(f"VisionConfig.image_size={self.image_size} must be divisible by "
                             f"patch_size={self.patch_size}")
        if self.position not in VISION_POSITIONS:
            raise ValueError(f"VisionConfig.position must be one of {list(VISION_POSITIONS)}, "
                             f"got {self.position!r}")
        if self.rope_positions not in ROPE_POSITION_MODES:
            raise ValueError(f"VisionConfig.rope_positions must be one of "
                             f"{list(ROPE_POSITION_MODES)}, got {self.rope_positions!r}")
        if not isinstance(self.encoder, EncoderConfig):
            raise TypeError(f"VisionConfig.encoder must be an EncoderConfig, got "
                            f"{type(self.encoder).__name__}")
        self.block_config  # noqa: B018  (validates the derived block config now)

    @property
    def grid(self) -> int:
        """Patches per side of the training image."""
        return self.image_size // self.patch_size

    @property
    def block_config(self) -> EncoderConfig:
        """The `EncoderConfig` the blocks are built from (position kind set from this config)."""
        if self.position == "absolute":
            return self.encoder.replace(position="absolute", rope_axes=1, rotary_value=False)
        base = DEFAULT_ROPE_BASE[self.position] if self.rope_base is None else self.rope_base
        return self.encoder.replace(position=self.position, rope_axes=2, rope_base=float(base))

    def replace(self, **changes: Any) -> "VisionConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, **overrides: Any) -> "VisionConfig":
        """8x8 grey images, 2x2 patches (4x4 grid), 10 classes, E=32, L=2, H=4, pre-norm."""
        base = dict(image_size=8, channels=1, patch_size=2, num_classes=10,
                    encoder=EncoderConfig.tiny(norm="pre", hidden_dropout=0.0,
                                               attention_dropout=0.0))
        return cls(**{**base, **overrides})


def grid_positions(grid_h: int, grid_w: int, *, scale_h: float = 1.0,
                   scale_w: float = 1.0) -> Float[Array, "1 T 2"]:
    """``[1, G_h * G_w, 2]`` fp32 (row * scale_h, col * scale_w) of each patch, row-major."""
    rows = jnp.arange(grid_h, dtype=jnp.float32) * jnp.float32(scale_h)
    cols = jnp.arange(grid_w, dtype=jnp.float32) * jnp.float32(scale_w)
    rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
    return jnp.stack([rr, cc], axis=-1).reshape(1, grid_h * grid_w, 2)


def resize_position_table(table: Float[Array, "h w E"], grid_h: int,
                          grid_w: int) -> Float[Array, "gh gw E"]:
    """Resize a learned ``[h, w, E]`` table bilinearly to ``[grid_h, grid_w, E]``; the same
    grid returns the table itself."""
    if (grid_h, grid_w) == tuple(table.shape[:2]):
        return table
    return jax.image.resize(table, (grid_h, grid_w, table.shape[2]), method="bilinear")


def patchify(images: Float[Array, "B Hi Wi N"], patch: int) -> Float[Array, "B gh gw Q"]:
    """``[B, G_h, G_w, patch * patch * N]``: each patch flattened in (row, col, channel) order."""
    b, h, w, n = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, n)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // patch, w // patch, patch * patch * n)


class VisionEncoder(nnx.Module):
    """Patch embedding -> (+ absolute table) -> the encoder's `Block` x L -> LN -> mean -> Dense.

    Hooks: ``patch_embed``, ``position_table`` (``"absolute"`` only), ``blocks[i]``,
    ``final_norm``, ``classifier``; `positions` gives the RoPE positions of a grid.
    """

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        block_cfg = cfg.block_config
        init = F.normal_init(block_cfg.initializer_range)
        e = block_cfg.hidden_size
        param_dtype = jnp.dtype(block_cfg.param_dtype)
        linear = lambda i, o: Dense(i, o, init=init, rngs=rngs, param_dtype=param_dtype,  # noqa: E731
                                    precision=block_cfg.matmul_precision)
        self.patch_embed = linear(cfg.patch_size * cfg.patch_size * cfg.channels, e)
        self.position_table = (nnx.Param(init(rngs.params(), (cfg.grid, cfg.grid, e),
                                              jnp.float32).astype(param_dtype))
                               if cfg.position == "absolute" else None)
        self.blocks = BlockStack([Block(block_cfg, rngs=rngs) for _ in range(block_cfg.num_layers)],
                                 scan=block_cfg.scan_layers, remat=block_cfg.remat)
        self.final_norm = LayerNorm(e, eps=block_cfg.layer_norm_eps, param_dtype=param_dtype)
        self.classifier = linear(e, cfg.num_classes)
        self.dtype = jnp.dtype(block_cfg.dtype)
        self.dropout_rate = block_cfg.hidden_dropout
        self.has_dropout = block_cfg.hidden_dropout > 0 or block_cfg.attention_dropout > 0

    def check_images(self, images: Any) -> None:
        """Validate `images`; errors name the argument, the expected and the actual."""
        cfg = self.config
        if not hasattr(images, "ndim") or not hasattr(images, "dtype"):
            raise TypeError(f"images must be an array [B, H, W, N={cfg.channels}], got "
                            f"{type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must have rank 4 [B, H, W, N={cfg.channels}], got rank "
                             f"{images.ndim} with shape {tuple(images.shape)}")
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise TypeError(f"images must be a float array, got dtype {images.dtype}; "
                            "scale pixels first, e.g. images.astype(float32) / 255")
        _, h, w, n = images.shape
        if n != cfg.channels:
            raise ValueError(f"images must have N={cfg.channels} channels on the last axis "
                             f"[B, H, W, N], got {n} (shape {tuple(images.shape)})")
        if h % cfg.patch_size or w % cfg.patch_size or h == 0 or w == 0:
            raise ValueError(f"images height and width must be positive multiples of "
                             f"patch_size={cfg.patch_size}, got H={h}, W={w} "
                             f"(shape {tuple(images.shape)})")

    def positions(self, grid_h: int, grid_w: int, *, mode: str | None = None
                  ) -> Float[Array, "1 T 2"]:
        """RoPE positions ``[1, T, 2]`` of a ``grid_h x grid_w`` patch grid (``mode`` defaults to
        ``config.rope_positions``)."""
        mode = self.config.rope_positions if mode is None else mode
        if mode not in ROPE_POSITION_MODES:
            raise ValueError(f"rope_positions must be one of {list(ROPE_POSITION_MODES)}, "
                             f"got {mode!r}")
        if mode == "index":
            return grid_positions(grid_h, grid_w)
        g = self.config.grid
        return grid_positions(grid_h, grid_w, scale_h=g / grid_h, scale_w=g / grid_w)

    def __call__(
        self,
        images: Array,
        *,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Array | None = None,
        rope_positions: str | None = None,
    ) -> Float[Array, "B C"]:
        # `images` is a plain `Array`: `check_images` gives errors that name the argument.
        """Class logits for a batch of images.

        Args:
          images: ``[B, H, W, N]`` float, H and W multiples of ``patch_size`` (any grid).
          deterministic: False enables dropout, which then needs `key`.
          key: PRNG key for dropout; stage s uses ``fold_in(key, s)`` (0 = embeddings,
            i + 1 = block i).
          positions: RoPE kinds only: explicit ``[B|1, T, 2]`` patch positions, overriding the
            grid's (e.g. shifted, to test relativity).
          rope_positions: ``"index"`` / ``"extent"``, overriding ``config.rope_positions``.

        Returns:
          ``[B, C]`` logits.
        """
        cfg = self.config
        self.check_images(images)
        if not deterministic and key is None and self.has_dropout:
            raise ValueError("deterministic=False needs key= (a PRNG key for dropout), got None")
        patches = patchify(images.astype(self.dtype), cfg.patch_size)
        b, gh, gw, _ = patches.shape
        t = gh * gw
        h = self.patch_embed(patches)  # [B, G_h, G_w, E]
        if self.position_table is not None:
            if positions is not None:
                raise ValueError("positions= applies to position='rope' or 'rope_mixed' only; "
                                 "this model has position='absolute'")
            h = h + resize_position_table(self.position_table[...], gh, gw)[None].astype(h.dtype)
            pos = None
        elif positions is None:
            pos = self.positions(gh, gw, mode=rope_positions)
        else:
            if positions.ndim != 3 or positions.shape[0] not in (1, b) or positions.shape[1:] != (t, 2):
                raise ValueError(f"positions must have shape [B|1, T, 2] = [{b}|1, {t}, 2] for a "
                                 f"{gh}x{gw} grid, got {tuple(positions.shape)}")
            pos = positions.astype(jnp.float32)
        h = h.reshape(b, t, h.shape[-1])
        h = F.dropout(h, self.dropout_rate, key=None if key is None else jax.random.fold_in(key, 0),
                      deterministic=deterministic)
        h, _ = self.blocks(h, mask=None, deterministic=deterministic, key=key, positions=pos)
        pooled = jnp.mean(self.final_norm(h), axis=1)
        return self.classifier(pooled)
