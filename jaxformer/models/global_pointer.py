"""GlobalPointer span head (Su, https://kexue.fm/archives/8373): one Dense, then the kernel.

Shape letters: B batch, T tokens, H hidden width, E entity types, D head size.

The Dense maps ``[B, T, H]`` to ``[B, T, E * 2 * D]``. **Split convention** (bert4keras'
``GlobalPointer`` layer): the output is cut into E consecutive chunks of ``2 D``, one per type,
and each chunk is ``[q | k]``, its first D features the span-start vector q and its last D the
span-end vector k. So output feature ``e * 2D + c`` is ``q[e, c]`` for ``c < D`` and
``k[e, c - D]`` otherwise, and a bert4keras GlobalPointer kernel loads without permuting.
The scores, masking and loss are `jaxformer.global_pointer`.
"""

from flax import nnx
from jaxtyping import Array, Float, Real, Shaped

from jaxformer import initializers as I
from jaxformer.global_pointer import global_pointer_scores
from jaxformer.models.modules import Dense

INITIALIZER_RANGE = 0.02  # bert4keras' TruncatedNormal(0.02) of the CLUE baselines


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class GlobalPointer(nnx.Module):
    """``scores[b, e, i, j]`` for every span (i, j) and entity type e, from hidden states."""

    def __init__(self, hidden_size: int, num_types: int, head_size: int = 64, *,
                 use_bias: bool = True, rope: bool = True, rngs: nnx.Rngs):
        """Build the projection.

        Args:
          hidden_size: H, the width of the hidden states.
          num_types: E, the entity types (one score matrix each).
          head_size: D, the width of each q and k vector; even when `rope` (64 in Su's CLUE
            heads, the encoder's attention head size).
          use_bias: give the Dense a bias (Su's CLUENER head has none).
          rope: rotate q and k by RoPE at positions ``0 .. T-1``, so scores see j - i.
          rngs: ``rngs.params()`` draws the kernel from a truncated normal with std 0.02
            (±2σ, variance-corrected as the kit's ``truncated_normal`` init).
        """
        self.hidden_size = _check_positive_int("hidden_size", hidden_size)
        self.num_types = _check_positive_int("num_types", num_types)
        self.head_size = _check_positive_int("head_size", head_size)
        if rope and head_size % 2:
            raise ValueError(f"head_size must be even with rope=True (RoPE turns feature pairs), "
                             f"got {head_size}")
        self.rope = bool(rope)
        self.dense = Dense(hidden_size, num_types * 2 * head_size,
                           init=I.truncated_normal(INITIALIZER_RANGE), rngs=rngs,
                           use_bias=use_bias)

    def __call__(
        self,
        hidden: Float[Array, "B T H"],
        attention_mask: Shaped[Array, "B T"] | None = None,
        *,
        positions: Real[Array, "#B T"] | None = None,
    ) -> Float[Array, "B E T T"]:
        """Span scores ``[B, E, T, T]`` in the hidden states' dtype.

        Spans touching padding (``attention_mask == 0``) or ending before they start get
        `jaxformer.global_pointer.mask_value`. `positions` (default ``arange(T)``) feed RoPE.
        """
        batch, tokens, width = hidden.shape
        if width != self.hidden_size:
            raise ValueError(f"hidden must have last axis H = hidden_size = {self.hidden_size}, "
                             f"got shape {tuple(hidden.shape)}")
        y = self.dense(hidden).reshape(batch, tokens, self.num_types, 2, self.head_size)
        q, k = y[:, :, :, 0, :], y[:, :, :, 1, :]
        return global_pointer_scores(q, k, mask=attention_mask, positions=positions,
                                     rope=self.rope)
