"""Logical axis names of the encoder's parameters and activations.

Each array dimension gets a name that says what it indexes, not where it lives:

- ``embed``: the model width E;
- ``heads``: the attention projections' H·D output (input of the attention output projection);
- ``mlp``: the feed-forward width F;
- ``vocab``: the vocabulary V;
- ``batch``, ``length``: an activation's B and T;
- ``None``: a dimension never split (positions, segment types, class logits).

A rules table (`jaxformer.train.sharding`) maps names to mesh axes, so one model runs data
parallel, fully sharded or tensor parallel by changing the table, not the model: the scheme of
MaxText's ``logical_axis_rules`` and big_vision's path-regex sharding rules
(github.com/google/big_vision, ``big_vision/sharding.py``).

The names come from the parameter's path in the model state (``encoder/blocks/0/attention/
query/kernel``), so the modules stay plain NNX and checkpoints keep their layout. A rule is a
regular expression searched in the path, anchored at its end: it also matches the optimiser
state's copies of the parameter (``.../mu/encoder/.../query/kernel``).

Layouts (the kernels are ``[in, out]``, ``x @ W``): query/key/value ``[E, H·D]``; attention
output ``[H·D, E]``; feed-forward ``[E, F]`` and ``[F, E]``; word embedding ``[V, E]`` (also the
tied MLM decoder). Megatron's split (Shoeybi et al. 2019, arXiv:1909.08053 §3): the first
matmul of each pair splits its output and the second its input, so each block needs one
all-reduce after attention and one after the feed-forward.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator, Sequence

from jax import Array

Names = tuple[str | None, ...]
Constraint = Callable[[Array, Names], Array]

# Logical names of activations: `constrain` lays them out by the active rules.
HIDDEN: Names = ("batch", "length", "embed")  # [B, T, E]: the residual stream between blocks
TOKENS: Names = ("batch", "length")  # [B, T]

# The constraint of the step being traced (a trace-time setting, like flax.linen's
# ``logical_axis_rules`` context): None outside a sharded step, so plain calls are untouched.
_CONSTRAINT: contextvars.ContextVar[Constraint | None] = contextvars.ContextVar(
    "jaxformer_activation_constraint", default=None)


def constrain(x: Array, names: Names) -> Array:
    """`x` (an activation whose dimensions are called `names`) pinned to the layout the active
    rules give it (`activation_sharding`); `x` unchanged outside one. The model calls it on the
    residual stream after the embeddings and after every block, so XLA cannot pick another
    layout for it (e.g. split ``[B, T, E]`` by E under FSDP, where the kernels are)."""
    fn = _CONSTRAINT.get()
    return x if fn is None else fn(x, names)


@contextlib.contextmanager
def activation_sharding(fn: Constraint | None) -> Iterator[None]:
    """Trace the model with ``fn(x, names) -> x`` as the activation constraint
    (`jaxformer.train.sharding.activation_constraint` makes one from rules and a mesh); None
    leaves activations to XLA's propagation."""
    token = _CONSTRAINT.set(fn)
    try:
        yield
    finally:
        _CONSTRAINT.reset(token)

# (regex searched at the end of the "/"-joined path, names of the array's dimensions); the first
# match wins. Biases and norm parameters follow the dimension they are added to.
PARAMETER_RULES: tuple[tuple[str, Names], ...] = (
    (r"(^|/)word/embedding$", ("vocab", "embed")),
    (r"(^|/)(position|token_type)/embedding$", (None, "embed")),
    (r"attention/(query|key|value)/kernel$", ("embed", "heads")),
    (r"attention/(query|key|value)/bias$", ("heads",)),
    (r"attention/output/kernel$", ("heads", "embed")),
    (r"ffn/intermediate/kernel$", ("embed", "mlp")),
    (r"ffn/intermediate/bias$", ("mlp",)),
    (r"ffn/output/kernel$", ("mlp", "embed")),
    (r"(^|/)head/bias$", ("vocab",)),  # the MLM decoder's output bias [V]
    (r"(transform|pooler/dense)/kernel$", ("embed", None)),  # [E, E]: split one side only
    (r"classifier/kernel$", ("embed", None)),  # [E, C]
    (r"classifier/bias$", (None,)),
    (r"(norm|output|transform|pooler/dense)/(scale|bias)$", ("embed",)),
)


def path_string(path: Sequence[object]) -> str:
    """``"encoder/blocks/0/attention/query/kernel"`` from a pytree key path (an NNX state's or
    ``jax.tree_util``'s), without the trailing ``value`` of an NNX variable."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                key = getattr(key, attr)
                break
        parts.append(str(key))
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


def logical_axes(path: str, ndim: int, *,
                 rules: Sequence[tuple[str, Names]] = PARAMETER_RULES) -> Names | None:
    """The logical names of the ``ndim``-dimensional array at `path`, or None when no rule
    matches or the matching rule names a different number of dimensions (an optimiser's
    factored statistics of a kernel, say)."""
    for pattern, names in rules:
        if re.search(pattern, path):
            return names if len(names) == ndim else None
    return None
