"""Data, fully sharded and tensor parallelism as rules tables over a named mesh.

A mesh has two axes, ``data`` and ``model`` (``make_mesh((4, 2))``: 4 x 2 devices). A
`ShardingRules` table maps the logical names of `jaxformer.models.logical_axes` to those axes;
each array's `PartitionSpec` follows from its names, so the same model and train step run under
every preset:

=========  ====================================  =========================================
preset     rules                                 what each device holds
=========  ====================================  =========================================
``dp``     batch → data                          every parameter, B / |data| rows
``fsdp``   batch → data, embed → data            1 / |data| of each parameter and of its
                                                 optimiser state (ZeRO-3, Rajbhandari et
                                                 al. 2020, arXiv:1910.02054)
``tp``     heads, mlp, vocab → model             1 / |model| of the attention, feed-forward
                                                 and vocabulary matrices, the whole batch
                                                 (Megatron, arXiv:1909.08053)
``dp_tp``  batch → data; heads, mlp, vocab →     both: B / |data| rows, 1 / |model| of the
           model                                 big matrices
=========  ====================================  =========================================

Resolution (as MaxText's ``logical_to_mesh_axes``): a name without a rule, a mesh axis already
used by an earlier dimension of the same array, or a dimension its mesh axis does not divide
stays unsplit (None). So under ``fsdp`` an activation ``[batch, length, embed]`` is split over
its batch only, while a kernel ``[embed, heads]`` is split over its rows.

Parameters are created already sharded (`create_train_state`: the model is built inside a
``jax.jit`` whose outputs carry the shardings), so no device ever holds a whole copy first.
The step (`jaxformer.train.step.make_train_step` with ``shardings=``) keeps them so, and XLA's
SPMD partitioner inserts the collectives: FSDP all-gathers each weight before use and
reduce-scatters its gradient; TP all-reduces the partial sums after the attention and
feed-forward output projections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from flax.nnx.filterlib import Filter
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxformer.models.logical_axes import (PARAMETER_RULES, Constraint, Names, logical_axes,
                                           path_string)
from jaxformer.train.step import TrainState, init_train_state

MESH_AXES = ("data", "model")

PRESETS: dict[str, dict[str, str]] = {
    "dp": {"batch": "data"},
    "fsdp": {"batch": "data", "embed": "data"},
    "tp": {"heads": "model", "mlp": "model", "vocab": "model"},
    "dp_tp": {"batch": "data", "heads": "model", "mlp": "model", "vocab": "model"},
}


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """Logical name → mesh axis, as ``((name, axis), ...)``; names without a rule stay unsplit.

    Attributes:
      rules: the table (`PRESETS` holds the named ones).
      name: the preset's name, for reports.
      parameter_rules: path regex → logical names of each parameter
        (`jaxformer.models.logical_axes.PARAMETER_RULES` by default; extend it for new modules).
    """

    rules: tuple[tuple[str, str], ...]
    name: str = "custom"
    parameter_rules: tuple[tuple[str, Names], ...] = PARAMETER_RULES

    def __post_init__(self) -> None:
        names = [n for n, _ in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules: expected each logical name once, got {names}")
        for name, axis in self.rules:
            if not isinstance(name, str) or not isinstance(axis, str):
                raise ValueError(f"rules: expected (logical name, mesh axis) string pairs, got "
                                 f"{(name, axis)!r}")

    @classmethod
    def preset(cls, name: str) -> "ShardingRules":
        if name not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls(tuple(PRESETS[name].items()), name=name)

    def axis_of(self, name: str | None) -> str | None:
        return dict(self.rules).get(name) if name is not None else None

    def spec(self, names: Names, shape: Sequence[int], mesh: Mesh) -> P:
        """The `PartitionSpec` of an array of `shape` whose dimensions are called `names`."""
        if len(names) != len(shape):
            raise ValueError(f"names: expected {len(shape)} logical names for shape "
                             f"{tuple(shape)}, got {names}")
        used: set[str] = set()
        out = []
        for name, size in zip(names, shape):
            axis = self.axis_of(name)
            if axis is not None and axis not in mesh.axis_names:
                raise ValueError(f"rules: {name!r} maps to mesh axis {axis!r}, which the mesh "
                                 f"lacks (axes {list(mesh.axis_names)})")
            if axis is None or axis in used or size % mesh.shape[axis]:
                out.append(None)
                continue
            used.add(axis)
            out.append(axis)
        return P(*out)

    @property
    def batch_axis(self) -> str | None:
        """The mesh axis the batch's leading dimension is split over (None: replicated)."""
        return self.axis_of("batch")


def make_mesh(shape: tuple[int, int], *, devices: Sequence[jax.Device] | None = None,
              axis_names: tuple[str, str] = MESH_AXES) -> Mesh:
    """A ``(data, model)`` mesh of ``shape[0] x shape[1]`` devices (the first ones of
    `devices`, default ``jax.devices()``), with ``Auto`` axes so XLA propagates the layouts."""
    devices = list(jax.devices() if devices is None else devices)
    need = int(np.prod(shape))
    if len(shape) != len(axis_names) or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape: expected {len(axis_names)} positive sizes for axes "
                         f"{axis_names}, got {shape!r}")
    if need > len(devices):
        raise ValueError(f"shape: {shape} needs {need} devices, got {len(devices)}")
    grid = np.asarray(devices[:need], dtype=object).reshape(shape)
    return Mesh(grid, axis_names, axis_types=(AxisType.Auto,) * len(axis_names))


def tree_specs(tree: Any, rules: ShardingRules, mesh: Mesh, *, strict: bool = False) -> Any:
    """A `PartitionSpec` per array leaf of `tree` (a model state, a `TrainState`, abstract or
    concrete), from each leaf's path: a leaf whose path matches a parameter rule with its rank
    gets that rule's names; every other leaf (optimiser counters, factored statistics, RNG
    state) is replicated. With ``strict=True`` an unmatched leaf of rank >= 1 is an error that
    names its path (use it for parameters, which must all have names)."""

    def spec(path: Sequence[object], leaf: Any) -> P:
        shape = tuple(np.shape(leaf))
        where = path_string(path)
        names = logical_axes(where, len(shape), rules=rules.parameter_rules)
        if names is None:
            if strict and shape:
                raise ValueError(f"parameter {where!r} {shape}: no logical axis rule matches it; "
                                 "add (regex, names) to ShardingRules.parameter_rules")
            return P()
        return rules.spec(names, shape, mesh)

    return jax.tree_util.tree_map_with_path(spec, tree)


def tree_shardings(tree: Any, rules: ShardingRules, mesh: Mesh, *, strict: bool = False) -> Any:
    """`tree_specs` as `NamedSharding`s on `mesh`."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s),
                        tree_specs(tree, rules, mesh, strict=strict),
                        is_leaf=lambda x: isinstance(x, P))


def train_state_shardings(state: TrainState, rules: ShardingRules, mesh: Mesh) -> TrainState:
    """The `NamedSharding` of every leaf of `state` (abstract or concrete): parameters by their
    rules (every one must match), their optimiser moments alike, everything else replicated."""
    return TrainState(params=tree_shardings(state.params, rules, mesh, strict=True),
                      rest=tree_shardings(state.rest, rules, mesh),
                      opt_state=tree_shardings(state.opt_state, rules, mesh),
                      step=NamedSharding(mesh, P()))


def activation_constraint(rules: ShardingRules, mesh: Mesh) -> Constraint:
    """``fn(x, names)``: `x` constrained to the layout `rules` give its logical `names` on
    `mesh` (``jax.lax.with_sharding_constraint``), for `make_train_step(activations=...)`.
    Under ``dp`` and ``fsdp`` the residual stream ``[batch, length, embed]`` is split by batch
    only; under ``tp`` it is whole on every device (Megatron's layout between blocks)."""

    def fn(x: jax.Array, names: Names) -> jax.Array:
        spec = rules.spec(names, x.shape, mesh)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return fn


def batch_sharding(rules: ShardingRules, mesh: Mesh) -> NamedSharding:
    """Every batch leaf split over `rules.batch_axis` along its leading axis (or replicated)."""
    return NamedSharding(mesh, P(rules.batch_axis))


def create_train_state(build: Callable[[], nnx.Module], tx: optax.GradientTransformation, *,
                       mesh: Mesh, rules: ShardingRules, trainable: Filter = nnx.Param
                       ) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """Build the model and its optimiser state directly in their shardings.

    `build` makes the model (e.g. ``lambda: task.build_model(rngs=nnx.Rngs(0))``). It runs once
    abstractly (``jax.eval_shape``: shapes only) to find the layout, then inside one
    ``jax.jit`` whose ``out_shardings`` are that layout, so each device computes only its own
    shards: no whole copy is ever materialised (the initialisers are traced; the random bits
    equal an eager build's, the values up to an ulp of fused arithmetic).

    Returns ``(graphdef, state, shardings)``; pass ``shardings`` to ``make_train_step``.
    """

    def init() -> TrainState:
        return init_train_state(build(), tx, trainable=trainable)[1]

    abstract = jax.eval_shape(init)
    shardings = train_state_shardings(abstract, rules, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    graphdef = nnx.split(nnx.eval_shape(build), trainable, ...)[0]
    return graphdef, state, shardings


def shard_train_state(state: TrainState, *, mesh: Mesh, rules: ShardingRules
                      ) -> tuple[TrainState, TrainState]:
    """Lay an existing state out by `rules` (e.g. one restored on one device):
    ``(state, shardings)``."""
    shardings = train_state_shardings(state, rules, mesh)
    return jax.device_put(state, shardings), shardings


def describe(tree: Any, rules: ShardingRules, mesh: Mesh) -> Mapping[str, str]:
    """``{path: "PartitionSpec(...)"}`` of every array leaf, for reports and debugging."""
    specs = tree_specs(tree, rules, mesh)
    flat = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    return {path_string(p): str(s) for p, s in flat}


def bytes_per_device(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of `tree` (arrays or ``ShapeDtypeStruct``s) laid out by
    `shardings`: the sum of each leaf's shard size (the largest shard where a split is
    uneven)."""
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(
            shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
        shape = sharding.shard_shape(tuple(leaf.shape))
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def state_memory(state: TrainState, shardings: TrainState) -> dict[str, int]:
    """Per-device bytes of the train state by part: ``params``, ``opt_state`` (the optimiser's
    moments and counters), ``rest`` (non-trained variables) and ``grads`` (a transient copy of
    the parameters' layout in fp32, alive during the update)."""
    grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, np.float32), state.params)
    return {"params": bytes_per_device(state.params, shardings.params),
            "grads": bytes_per_device(grads, shardings.params),
            "opt_state": bytes_per_device(state.opt_state, shardings.opt_state),
            "rest": bytes_per_device(state.rest, shardings.rest)}
