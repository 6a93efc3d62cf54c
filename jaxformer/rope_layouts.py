"""How RoPE lays pairs out in the head dim: sections per axis, the two pair layouts, and the
permutation between them (for converting q/k projection weights).

Conventions (see `jaxformer.rope` for the rotation itself):

* Dims ``[0, R)`` are cut into A contiguous sections, in the order of the positions' last axis;
  by default each axis gets ``R / A`` (2D: halves, as Su's post 4). Dims ``[R, D)`` never rotate.
* ``"interleaved"`` pairs ``(o + 2i, o + 2i + 1)`` within a section at offset ``o`` (RoFormer,
  bert4keras, HF RoFormer); ``"half"`` pairs ``(o + i, o + i + r/2)`` (GPT-NeoX, HF LLaMA).
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, Shaped

LAYOUTS = ("interleaved", "half")


def _check_layout(name: str, arg: str) -> None:
    if name not in LAYOUTS:
        raise ValueError(f"{arg}={name!r} is not a known pair layout; expected one of {LAYOUTS}")


def resolve_sections(rotary_dim: int, axes: int, sections: Sequence[int] | None) -> tuple[int, ...]:
    """The per-axis rotary widths ``(r_0, ..., r_{A-1})``: ``sections`` checked, or R/A each."""
    if sections is None:
        if rotary_dim % (2 * axes) != 0:
            raise ValueError(
                f"rotary_dim={rotary_dim} cannot be split into A={axes} equal even sections "
                f"(needs a multiple of 2*A={2 * axes}); pass sections= with even widths summing "
                f"to {rotary_dim}, or a smaller rotary_dim")
        return (rotary_dim // axes,) * axes
    sections = tuple(sections)
    if len(sections) != axes:
        raise ValueError(f"positions have A={axes} axes (last axis) but sections={sections} has "
                         f"{len(sections)} entries; expected one width per axis")
    bad = [w for w in sections if not isinstance(w, int) or w <= 0 or w % 2]
    if bad:
        raise ValueError(f"sections={sections} must be positive even widths; got {bad}")
    if sum(sections) != rotary_dim:
        raise ValueError(f"sections={sections} sum to {sum(sections)}; expected the rotary dim "
                         f"{rotary_dim}")
    return sections


def _resolve_rotary_dim(rotary_dim: int | None, head_dim: int) -> int:
    if rotary_dim is None:
        rotary_dim = head_dim
    if rotary_dim > head_dim:
        raise ValueError(f"rotary_dim={rotary_dim} exceeds the head dim D={head_dim}; expected "
                         f"an even rotary_dim <= {head_dim}")
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be even and > 0, got {rotary_dim} (D={head_dim})")
    return rotary_dim


def _pair_dims(sections: tuple[int, ...], layout: str) -> tuple[np.ndarray, np.ndarray]:
    """The (first, second) dim of every pair, in pair order."""
    first, second, off = [], [], 0
    for w in sections:
        i = np.arange(w // 2)
        first.append(off + 2 * i if layout == "interleaved" else off + i)
        second.append(off + 2 * i + 1 if layout == "interleaved" else off + w // 2 + i)
        off += w
    return np.concatenate(first), np.concatenate(second)


def layout_permutation(
    head_dim: int,
    *,
    src: str, dst: str,
    rotary_dim: int | None = None,
    sections: Sequence[int] | None = None,
    axes: int = 1,
) -> Int[np.ndarray, " D"]:
    """Index permutation ``perm`` with ``rope(x, src)[..., perm] == rope(x[..., perm], dst)``.

    ``x[..., perm]`` moves each pair's two dims from where layout `src` puts them to where
    `dst` does (unrotated tail dims stay). Use the same ``rotary_dim``/``sections``/``axes``
    (A, for the default equal split) as the `apply_rope` calls; a mixed frequency array is
    one section. For ``src="interleaved", dst="half"`` and one section this is Meta -> HF
    LLaMA's q/k ``permute``: ``[0, 2, 4, ..., 1, 3, 5, ...]``.
    """
    _check_layout(src, "src")
    _check_layout(dst, "dst")
    secs = resolve_sections(_resolve_rotary_dim(rotary_dim, head_dim), axes, sections)
    perm = np.arange(head_dim)
    for dst_dims, src_dims in zip(_pair_dims(secs, dst), _pair_dims(secs, src)):
        perm[dst_dims] = src_dims  # first dims, then second dims
    return perm


def permute_qk_weights(
    w: Shaped[Array, "..."] | Shaped[np.ndarray, "..."],
    *,
    num_heads: int, head_dim: int,
    src: str, dst: str, axis: int,
    rotary_dim: int | None = None,
    sections: Sequence[int] | None = None,
    axes: int = 1,
) -> Shaped[Array, "..."] | Shaped[np.ndarray, "..."]:
    """Convert a q or k projection (or its bias) from pair layout `src` to `dst`.

    Rotating the converted q and k with `dst` gives the same attention scores as the original
    weights with `src`: both get the same head-dim permutation (:func:`layout_permutation`),
    which a dot product does not see. Apply it to q AND k, never to v or the output.

    Args:
      w: a weight with an output-features axis of size ``num_heads * head_dim`` (head-major).
      axis: that axis: ``0`` for HF/PyTorch ``[out, in]`` and biases, ``-1`` (or 1) for our
        ``[in, out]`` kernels. Required, since guessing it would corrupt weights silently.
      num_heads, head_dim, rotary_dim, sections, axes: the attention's RoPE settings.

    Returns:
      The permuted weight, a NumPy array for NumPy input, else a JAX array.
    """
    axis = axis % w.ndim
    if w.shape[axis] != num_heads * head_dim:
        raise ValueError(f"w has shape {tuple(w.shape)}; expected axis {axis} of size num_heads"
                         f" * head_dim = {num_heads} * {head_dim} = {num_heads * head_dim}")
    perm = layout_permutation(head_dim, src=src, dst=dst, rotary_dim=rotary_dim,
                              sections=sections, axes=axes)
    index = (np.arange(num_heads)[:, None] * head_dim + perm[None, :]).reshape(-1)
    if isinstance(w, np.ndarray):
        return np.take(w, index, axis=axis)
    return jnp.take(w, jnp.asarray(index), axis=axis)
