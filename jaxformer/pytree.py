"""Dotted names for the leaves of a parameter tree: ``"blocks.0.attention.query.kernel"``.

Rules that act on parameters (re-initialise these kernels, scale those residual outputs, map
them to Hugging Face names) need a stable string per leaf. jax gives each leaf a key path
(`jax.tree_util.tree_flatten_with_path`); `path_name` renders it by joining dict keys, sequence
indices and attribute names with dots. A flax NNX ``Variable`` flattens to its array under the
attribute ``value``, and that step is dropped, so an ``nnx.State`` and its pure dict
(``nnx.to_pure_dict``) give the same names.
"""

from collections.abc import Sequence
from typing import Any

import jax


def path_name(path: Sequence[Any]) -> str:
    """The dotted name of one key path: ``(DictKey('blocks'), SequenceKey(0), ...)`` ->
    ``"blocks.0..."``. Attribute ``value`` (an NNX Variable's array) is skipped; key types that
    are none of dict key, sequence index, attribute or flattened index are rendered with `str`."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            if entry.name != "value":
                parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    return ".".join(parts)


def named_leaves(tree: Any) -> dict[str, Any]:
    """``{"blocks.0.attention.query.kernel": leaf, ...}`` for every leaf of `tree`, in jax's
    flattening order. Two paths with the same name (not produced by NNX states or nested dicts
    of string keys) collapse: the later leaf wins."""
    return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
