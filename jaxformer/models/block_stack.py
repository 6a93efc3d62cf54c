"""`BlockStack`: the one loop over Transformer blocks, for every encoder of the kit.

Shape letters: B batch, T tokens, E width, L blocks.

The text encoder, the vision encoder and BERT-of-Theseus all run ``h_{i+1} = block_i(h_i)`` with
the same four concerns, which live here once:

- **loop or scan**: an unrolled Python loop, or one `lax.scan` over the blocks' stacked states
  (``scan=True``), which XLA compiles once whatever L is;
- **remat**: `jax.checkpoint` around each block with a named policy (`REMAT_POLICIES`), so the
  backward pass recomputes what the policy does not save;
- **stage keys**: block i draws its dropout from ``fold_in(key, first_stage + i)`` in both forms,
  so loop, scan and remat give the same masks;
- **hidden states**: the input and every block's output, as HF's ``output_hidden_states``.

`BlockStack` subclasses `nnx.List`, so the blocks stay at ``blocks.0``, ``blocks.1``, ... in the
parameter tree (the HF name table and checkpoints do not change), ``stack[i]`` and iteration work
as before, and any block whose ``__call__`` takes ``(h, *, mask, deterministic, key, positions)``
can be stacked.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer.models.logical_axes import HIDDEN, constrain

# EncoderConfig.remat -> the `jax.checkpoint` policy (None: save nothing but the block input).
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "block": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_NAMES = ("none", *REMAT_POLICIES)


class BlockStack(nnx.List):
    """A list of blocks and how to run them (module doc).

    Args:
      blocks: the blocks, in order.
      scan: run them as one `lax.scan` over their stacked states (they must have identical
        structure; the stacking copies the parameters once per call, small next to the
        blocks' FLOPs).
      remat: ``"none"`` or a key of `REMAT_POLICIES`.
      first_stage: the dropout stage of block 0 (the encoders use 0 for their embeddings).
    """

    def __init__(self, blocks: Sequence[nnx.Module], *, scan: bool = False, remat: str = "none",
                 first_stage: int = 1):
        super().__init__(blocks)
        if remat not in REMAT_NAMES:
            raise ValueError(f"remat must be one of {list(REMAT_NAMES)}, got {remat!r}")
        if not isinstance(scan, bool):
            raise ValueError(f"scan must be a bool, got {scan!r}")
        self.scan = scan
        self.remat = remat
        self.first_stage = int(first_stage)

    def __call__(
        self,
        h: Float[Array, "B T E"],
        *,
        mask: Array | None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Array | None = None,
    ) -> tuple[Float[Array, "B T E"], tuple[Float[Array, "B T E"], ...]]:
        """Run every block; returns ``(last, (h, out_0, ..., out_{L-1}))``."""
        return self.run(h, start=0, stop=len(self), mask=mask, deterministic=deterministic,
                        key=key, positions=positions)

    def run(
        self,
        h: Float[Array, "B T E"],
        *,
        start: int,
        stop: int,
        mask: Array | None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Array | None = None,
    ) -> tuple[Float[Array, "B T E"], tuple[Float[Array, "B T E"], ...]]:
        """Run blocks ``start .. stop - 1`` only (a module of BERT-of-Theseus), each with the
        stage key it has in the full stack, ``fold_in(key, first_stage + i)``; returns
        ``(last, (h, out_start, ..., out_{stop-1}))``."""
        n = len(self)
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop <= n):
            raise ValueError(f"start and stop must be ints with 0 <= start <= stop <= {n} "
                             f"(the block count), got start={start!r}, stop={stop!r}")
        if start == stop:
            return h, (h,)
        h = constrain(h, HIDDEN)  # the embeddings' output (or a Theseus module's input)
        stages = jnp.arange(self.first_stage + start, self.first_stage + stop, dtype=jnp.uint32)
        keys = None if key is None else jax.vmap(lambda s: jax.random.fold_in(key, s))(stages)
        call = self._block_fn(mask=mask, deterministic=deterministic, positions=positions)
        blocks = [self[i] for i in range(start, stop)]
        if self.scan:
            return self._scan(h, keys, call, blocks)
        outputs = [h]
        for i, block in enumerate(blocks):
            graphdef, state = nnx.split(block)
            h = call(graphdef, state, h, None if keys is None else keys[i])
            outputs.append(h)
        return h, tuple(outputs)

    def _block_fn(self, *, mask: Array | None, deterministic: bool, positions: Array | None
                  ) -> Callable[..., Array]:
        """``call(graphdef, state, h, key) -> h'``: one block, pure, checkpointed when remat."""

        def apply(graphdef: Any, state: Any, h: Array, key: Any) -> Array:
            block = nnx.merge(graphdef, state)
            out = block(h, mask=mask, deterministic=deterministic, key=key, positions=positions)
            return constrain(out, HIDDEN)

        if self.remat == "none":
            return apply
        checkpointed = jax.checkpoint(apply, policy=REMAT_POLICIES[self.remat], static_argnums=(0,))
        return checkpointed

    def _scan(self, h: Array, keys: Array | None, call: Callable[..., Array],
              blocks: Sequence[nnx.Module]) -> tuple[Array, tuple[Array, ...]]:
        """Why a scan: in an unrolled Pre-LN stack the stream's cotangent is a chain of
        elementwise adds (of each norm's backward) across all L blocks, which XLA fuses, and
        duplicates, into the consumers of every block, so compile and step time grow much
        faster than L. A loop body is a fusion boundary, and XLA compiles it once."""
        graphdef, _ = nnx.split(blocks[0])
        states = [nnx.split(block)[1] for block in blocks]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

        def body(carry: Array, xs: Any) -> tuple[Array, Array]:
            state, k = xs
            out = call(graphdef, state, carry, k)
            return out, out

        out, per_block = jax.lax.scan(body, h, (stacked, keys))
        return out, (h, *(per_block[i] for i in range(len(states))))
