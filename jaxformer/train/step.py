"""Pure, jitted train and eval steps over an explicit `TrainState`.

The jit boundary follows Flax's own gemma example (github.com/google/flax, examples/gemma)::

    graphdef, state = init_train_state(model, tx)     # nnx.split(model, nnx.Param, ...)
    step = make_train_step(graphdef, tx, loss_fn)     # jitted, state donated
    for s in range(n):
        state, metrics = step(state, batch_at(s), key=root_key)
    model = merge_model(graphdef, state)

Inside the step, the model is rebuilt with ``nnx.merge`` from traced arrays, so the function is
pure and the same code runs in NNX graph mode and tree mode. The dropout key of step ``s`` is
``fold_in(key, s)``, computed inside the trace from ``state.step``: pass the same root key every
step. A ``loss_fn`` has the signature ``loss_fn(model, batch, *, key, deterministic) ->
(loss, metrics_dict)``.

Mixed precision: the parameters are stored in the model's ``param_dtype`` (fp32, or bf16 for a
pure-bf16 model); the optimiser sees fp32 gradients and fp32 parameters and keeps its state in
fp32, and the update is added in fp32 before the sum is stored back in ``param_dtype``. With fp32
parameters (``"mixed_bf16"``: bf16 compute) they are the fp32 master weights; with bf16
parameters only the optimiser state is fp32, and updates smaller than half a bf16 ulp of a weight
are lost (pure bf16's known limit).

Data parallelism is one `jax.jit` with shardings, no device loops: with a `Mesh`, every batch
leaf is split over `data_axis` along its leading axis and the state is replicated. XLA inserts
the cross-device reductions of the mean loss and its gradient.
"""


from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx.filterlib import Filter
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import PRNGKeyArray

from jaxformer.models.logical_axes import Constraint, activation_sharding
from jaxformer.train.optim import learning_rate_of

LossFn = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]
Batch = Mapping[str, Any]


class TrainState(NamedTuple):
    """Everything a train step reads and writes; a pytree, so it passes through `jit` and orbax.

    The fields are typed `Any` on purpose: the same container also holds abstract leaves
    (`jax.ShapeDtypeStruct`, for restoring a checkpoint) and tracers.

    Attributes:
      params: ``nnx.State`` of the trained variables (by default every `nnx.Param`; see the
        ``trainable`` filter of `init_train_state`).
      rest: ``nnx.State`` of every other variable (empty for the encoder and its heads unless
        some parameters are frozen).
      opt_state: the optax state of `params`.
      step: int32 scalar, the number of updates applied so far.
    """

    params: Any
    rest: Any
    opt_state: Any
    step: Any


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, *,
                     trainable: Filter = nnx.Param) -> tuple[nnx.GraphDef, TrainState]:
    """Split `model` into ``(graphdef, TrainState)`` at step 0.

    Args:
      model: any NNX module.
      tx: the optimiser; its state covers the `trainable` variables only.
      trainable: an NNX filter choosing the variables the optimiser updates (default: every
        `nnx.Param`). Everything else, frozen parameters included, goes to ``state.rest`` and
        passes through a train step unchanged (BERT-of-Theseus freezes its predecessor so).

    The arrays are copied, so donating the state to the train step never deletes the buffers
    that `model` itself still holds.
    """
    graphdef, params, rest = nnx.split(model, trainable, ...)
    params, rest = jax.tree.map(jnp.copy, (params, rest))
    return graphdef, TrainState(params, rest, tx.init(to_float32(params)), jnp.zeros((), jnp.int32))


def to_float32(tree: Any) -> Any:
    """Every floating leaf of `tree` as fp32 (the optimiser's view of parameters and gradients:
    module doc); other leaves as they are."""
    return jax.tree.map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` added in fp32 and stored back in each parameter's own dtype (equal to
    `optax.apply_updates` for fp32 parameters)."""
    return jax.tree.map(lambda p, u: (p.astype(jnp.float32) + u.astype(jnp.float32)).astype(p.dtype),
                        params, updates)


def merge_model(graphdef: nnx.GraphDef, state: TrainState) -> nnx.Module:
    """The model with `state`'s parameters (shares buffers: do not donate `state` afterwards)."""
    return nnx.merge(graphdef, state.params, state.rest)


def check_batch(batch: Batch, *, mesh: Mesh | None = None, data_axis: str | None = "data"
                ) -> int:
    """Return the batch size B after checking every leaf has the same leading axis B.

    With a mesh, B must also be divisible by the size of `data_axis` (None: the batch is
    replicated, as under pure tensor parallelism).
    """
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError("batch must contain at least one array, got an empty tree")
    sizes = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if np.ndim(leaf) < 1:
            raise ValueError(f"batch leaf {name} must have a leading batch axis, got a scalar")
        sizes[name] = np.shape(leaf)[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every batch leaf must have the same leading size B, got {sizes}")
    size = next(iter(sizes.values()))
    if mesh is not None and data_axis is not None:
        if data_axis not in mesh.axis_names:
            raise ValueError(f"data_axis={data_axis!r} is not an axis of the mesh; "
                             f"expected one of {list(mesh.axis_names)}")
        n = mesh.shape[data_axis]
        if size % n:
            raise ValueError(
                f"batch size B={size} is not divisible by the size of mesh axis "
                f"{data_axis!r} ({n}); use a batch size that is a multiple of {n}"
            )
    return size


def auto_mesh(mesh: Mesh) -> Mesh:
    """`mesh` with every axis of type ``Auto``.

    ``jax.make_mesh`` makes ``Explicit`` axes by default (JAX >= 0.7), under which every op
    must resolve its output sharding at trace time; the encoder's embedding gather on a
    batch-sharded index array cannot (``ShardingTypeError``). The models here are not
    sharding-annotated (style lesson 12), so the step hands the layout to XLA's propagation
    instead: same devices and axis names, Auto types.
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def data_shardings(mesh: Mesh | None, data_axis: str | None = "data"
                   ) -> tuple[NamedSharding | None, NamedSharding | None]:
    """``(replicated, batch)`` shardings the steps use: ``P()`` and ``P(data_axis)`` (leading
    axis split; ``P()`` for ``data_axis=None``), on `auto_mesh(mesh)`; ``(None, None)``
    without a mesh. Put batches with ``jax.device_put(batch, batch_sharding)`` ahead of time to
    overlap the transfer."""
    if mesh is None:
        return None, None
    if data_axis is not None and data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis={data_axis!r} is not an axis of the mesh; "
                         f"expected one of {list(mesh.axis_names)}")
    mesh = auto_mesh(mesh)
    return NamedSharding(mesh, P()), NamedSharding(mesh, P(data_axis))


def state_layout(mesh: Mesh | None, shardings: TrainState | None,
                 replicated: NamedSharding | None) -> Any:
    """The state's in/out sharding of a step: `shardings`, else `replicated`."""
    if shardings is None:
        return replicated
    if mesh is None:
        raise ValueError("shardings: given without a mesh; pass the mesh they were made on")
    return shardings


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    *,
    mesh: Mesh | None = None,
    data_axis: str | None = "data",
    donate: bool = True,
    trainable: Filter = nnx.Param,
    accumulate: int = 1,
    shardings: TrainState | None = None,
    activations: Constraint | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``step(state, batch, *, key) -> (state, metrics)``, jitted.

    Args:
      graphdef: from `init_train_state`.
      tx: the optax transformation whose state is ``state.opt_state``.
      loss_fn: ``loss_fn(model, batch, *, key, deterministic) -> (loss, metrics)``; called with
        ``deterministic=False`` and ``key = fold_in(key, state.step)``.
      mesh: optional; shards the batch over `data_axis` and replicates the state (unless
        `shardings` says otherwise).
      data_axis: the mesh axis that splits the batch (None: every device sees all of it).
      donate: donate the input state's buffers (they are deleted after the call).
      trainable: the filter `init_train_state` split the state with (the same one).
      accumulate: gradient accumulation: split each ``[B, ...]`` batch into `accumulate`
        micro-batches of ``B / accumulate`` rows (consecutive), run them one after another in a
        ``lax.scan`` (activations of one micro-batch live at a time) and make ONE update from
        their combined gradient (bert4keras' ``grad_accum_steps``, used by the CLUE baselines
        of kexue.fm/archives/8739). Micro-batch ``i`` draws its dropout with
        ``fold_in(fold_in(key, step), i)``. The loss, metrics and gradient are the
        weight-summed means over the micro-batches (weights: ``batch["weights"]`` summed per
        micro-batch, else its row count), so they equal one big batch's up to dropout draws.
      shardings: with `mesh`, the `NamedSharding` of every leaf of the state
        (`jaxformer.train.sharding.create_train_state`: FSDP, tensor parallel, ...); the step
        takes and returns the state in that layout. Default: replicated.
      activations: ``fn(x, names) -> x``, the layout of the model's named activations (the
        residual stream ``[batch, length, embed]``) while the step is traced
        (`jaxformer.train.sharding.activation_constraint(rules, mesh)`); None leaves them to
        XLA's propagation.

    Returns:
      The step function. ``metrics`` holds the loss_fn's metrics plus ``loss``, ``grad_norm``
      (global L2 norm before clipping) and, when the optimiser injects it, ``learning_rate``
      (the rate used by this update).
    """

    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"accumulate must be an int >= 1, got {accumulate!r}")

    def loss_and_grads(params: Any, rest: Any, batch: Batch, key: PRNGKeyArray) -> Any:
        def objective(params):  # noqa: ANN001, ANN202
            model = nnx.merge(graphdef, params, rest)
            with activation_sharding(activations):
                loss, metrics = loss_fn(model, batch, key=key, deterministic=False)
            # Re-read the non-trained state so in-forward updates (counters, stats) are kept.
            _, _, new_rest = nnx.split(model, trainable, ...)
            return loss, (dict(metrics), new_rest)

        (loss, (metrics, new_rest)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return loss, metrics, new_rest, to_float32(grads)

    def accumulated(params: Any, rest: Any, batch: Batch, key: PRNGKeyArray) -> Any:
        micro = jax.tree.map(lambda x: x.reshape(accumulate, x.shape[0] // accumulate,
                                                 *x.shape[1:]), dict(batch))

        def weight_of(b: Batch) -> jax.Array:
            if "weights" in b:
                return jnp.sum(b["weights"].astype(jnp.float32))
            return jnp.float32(next(iter(b.values())).shape[0])

        def body(carry, xs):  # noqa: ANN001, ANN202
            rest, sums = carry
            i, b = xs
            loss, metrics, rest, grads = loss_and_grads(params, rest, b,
                                                        jax.random.fold_in(key, i))
            w = weight_of(b)
            weighted = jax.tree.map(lambda x: w * x.astype(jnp.float32),
                                    (loss, metrics, grads))
            sums = jax.tree.map(jnp.add, sums, (*weighted, w))
            return (rest, sums), None

        # The carry's zeros take their structure from the first micro-batch's outputs.
        shapes = jax.eval_shape(lambda b: loss_and_grads(params, rest, b, key),
                                jax.tree.map(lambda x: x[0], micro))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32),
                             (shapes[0], shapes[1], shapes[3]))
        (rest, (loss, metrics, grads, total)), _ = jax.lax.scan(
            body, (rest, (*zeros, jnp.float32(0.0))),
            (jnp.arange(accumulate, dtype=jnp.uint32), micro))
        # All-zero weights (a fully padded batch) give zero, not NaN, like a weighted mean would.
        scale = jnp.where(total > 0, 1.0 / jnp.maximum(total, 1e-30), 0.0)
        loss, metrics, grads = jax.tree.map(lambda x: x * scale, (loss, metrics, grads))
        return loss, metrics, rest, grads

    def train_step(state: TrainState, batch: Batch, key: PRNGKeyArray
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        step_key = jax.random.fold_in(key, state.step)
        if accumulate == 1:
            loss, metrics, rest, grads = loss_and_grads(state.params, state.rest, batch,
                                                        step_key)
        else:
            loss, metrics, rest, grads = accumulated(state.params, state.rest, batch, step_key)
        updates, opt_state = tx.update(grads, state.opt_state, to_float32(state.params))
        params = apply_updates(state.params, updates)
        metrics.update(loss=loss, grad_norm=optax.tree.norm(grads))
        lr = learning_rate_of(opt_state)
        if lr is not None:
            metrics["learning_rate"] = lr
        return TrainState(params, rest, opt_state, state.step + 1), metrics

    replicated, data = data_shardings(mesh, data_axis)
    layout = state_layout(mesh, shardings, replicated)
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        jitted = jax.jit(train_step, donate_argnums=donate_argnums)
    else:
        jitted = jax.jit(train_step, donate_argnums=donate_argnums,
                         in_shardings=(layout, data, replicated),
                         out_shardings=(layout, replicated))

    def step(state: TrainState, batch: Batch, *, key: PRNGKeyArray
             ) -> tuple[TrainState, dict[str, jax.Array]]:
        rows = check_batch(batch, mesh=mesh, data_axis=data_axis)
        if rows % accumulate:
            raise ValueError(f"batch has B={rows} rows, not a multiple of accumulate="
                             f"{accumulate} (each micro-batch must have B / accumulate rows)")
        if mesh is not None:
            # A no-op for arrays already laid out this way (so donation still applies).
            state = jax.device_put(state, layout)
            batch = jax.device_put(batch, data)
        return jitted(state, batch, key)

    step.jitted = jitted  # the underlying jax.jit function (for .lower(...) / cost analysis)
    return step


def make_eval_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    *,
    mesh: Mesh | None = None,
    data_axis: str | None = "data",
    shardings: TrainState | None = None,
    activations: Constraint | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """Build ``eval_step(state, batch, *, key=None) -> metrics`` (``deterministic=True``).

    `key` goes to the loss_fn unchanged (no fold_in of the step): a classifier ignores it, a
    masked-LM loss draws its masking pattern from it even in evaluation, so callers pass fixed
    keys (``fold_in(key(seed), batch_index)``) and evaluation stays deterministic. The metrics
    are the loss_fn's plus ``loss``. `mesh`, `data_axis`, `shardings` and `activations` as in
    `make_train_step`.
    """

    def eval_step(params: Any, rest: Any, batch: Batch, key: PRNGKeyArray | None
                  ) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, params, rest)
        with activation_sharding(activations):
            loss, metrics = loss_fn(model, batch, key=key, deterministic=True)
        return {**metrics, "loss": loss}

    replicated, data = data_shardings(mesh, data_axis)
    layout = state_layout(mesh, shardings, replicated)
    params_layout = replicated if layout is replicated else layout.params
    rest_layout = replicated if layout is replicated else layout.rest
    if mesh is None:
        jitted = jax.jit(eval_step)
    else:
        jitted = jax.jit(eval_step,
                         in_shardings=(params_layout, rest_layout, data, replicated),
                         out_shardings=replicated)

    def evaluate(state: TrainState, batch: Batch, *, key: PRNGKeyArray | None = None
                 ) -> dict[str, jax.Array]:
        check_batch(batch, mesh=mesh, data_axis=data_axis)
        params, rest = state.params, state.rest
        if mesh is not None:
            params, rest = jax.device_put((params, rest), (params_layout, rest_layout))
            key = jax.device_put(key, replicated)
            batch = jax.device_put(batch, data)
        return jitted(params, rest, batch, key)

    evaluate.jitted = jitted  # the underlying jax.jit function (for .lower(...) / HLO checks)
    return evaluate
