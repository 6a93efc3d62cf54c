"""Second-moment diagnostics at init (post 8) and μP's coordinate check, with their plots.

Shape letters: B batch, T tokens, E width, L blocks, V vocabulary.

`moment_report` measures what post 8 (kexue.fm/archives/8620) reasons about: the second moment
``E[h_l²]`` of the residual stream after each block going forward, the second moment of what
each block adds, ``E[(h_{l+1} - h_l)²]``, and the second moment ``E[(∂ℓ/∂h_l)²]`` of the gradient
reaching each block going backward, for a probe loss ``ℓ = Σ r · out`` with a fixed ``r ~ N(0, 1)``
(so the gradient entering from the top has second moment exactly 1, and any drift is the
network's). Moments average over real tokens (``attention_mask``) and features.

`coord_check` is μP's coordinate check (Yang et al. 2022, "Tensor Programs V", §7 and Fig. 5;
`mup.coord_check`): train a few steps at several widths and plot the mean ``|h|`` of every layer
against width. A parametrization whose activations stay flat in width as training moves them is
one whose hyperparameters can transfer across width.
"""

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import PRNGKeyArray

from jaxformer.attention import padding_mask
from jaxformer.models.encoder import Encoder
from jaxformer.train.step import LossFn, init_train_state, make_train_step, merge_model


class MomentReport(NamedTuple):
    """Per-layer second moments at one set of parameters.

    Attributes:
      forward: ``[L + 1]``: ``E[h_l²]`` of the embeddings output (l = 0) and of each block's
        output (l = 1..L).
      update: ``[L]``: ``E[(h_{l+1} - h_l)²]``, what block l adds to (or changes in) the stream.
      grad: ``[L + 1]``: ``E[(∂ℓ/∂h_l)²]`` for the probe loss, in units of the gradient at the
        output (which has second moment 1).
      param_grad: ``[L]``: mean square gradient of block l's Dense kernels (Xiong et al. 2020
        Fig. 3 plot the norm of this for Post-LN vs Pre-LN).
      output: ``E[out²]`` of the final output (after the final norm, if any).
    """

    forward: np.ndarray
    update: np.ndarray
    grad: np.ndarray
    param_grad: np.ndarray
    output: float


def _encoder_of(model: Any) -> Encoder:
    """The `Encoder` inside `model` (itself, or ``model.encoder`` for the LM and task heads)."""
    if isinstance(model, Encoder):
        return model
    inner = getattr(model, "encoder", None)
    if isinstance(inner, Encoder):
        return inner
    raise TypeError(f"model must be an Encoder or have an .encoder Encoder, got "
                    f"{type(model).__name__}")


def _check_batch(batch: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    if "input_ids" not in batch:
        raise ValueError(f"batch must hold 'input_ids' [B, T], got keys {sorted(batch)}")
    ids = jnp.asarray(batch["input_ids"])
    if ids.ndim != 2:
        raise ValueError(f"batch['input_ids'] must be [B, T], got shape {tuple(ids.shape)}")
    attn = batch.get("attention_mask")
    attn = jnp.ones(ids.shape, jnp.int32) if attn is None else jnp.asarray(attn)
    if attn.shape != ids.shape:
        raise ValueError(f"batch['attention_mask'] must have the shape of input_ids "
                         f"{tuple(ids.shape)}, got {tuple(attn.shape)}")
    return ids, attn


def _masked_mean_square(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of ``x²`` over features and the tokens where ``weights`` [B, T] is 1."""
    per_token = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1)
    return jnp.sum(per_token * weights) / jnp.sum(weights)


def moment_report(model: Any, batch: Mapping[str, Any], *,
                  key: PRNGKeyArray | None = None) -> MomentReport:
    """Forward, update and gradient second moments per layer of `model` on `batch`.

    Args:
      model: an `Encoder`, or a model holding one as ``.encoder`` (`MaskedLM`, classifiers);
        only the encoder is measured. Runs deterministically (no dropout).
      batch: ``{"input_ids": [B, T], "attention_mask": [B, T] (optional)}``.
      key: draws the probe ``r ~ N(0, 1)`` ``[B, T, E]``; None uses ``jax.random.key(0)``, so
        a report is reproducible from the model and batch alone.

    Returns:
      A `MomentReport` of numpy arrays.
    """
    encoder = _encoder_of(model)
    ids, attn = _check_batch(batch)
    b, t = ids.shape
    e, num_layers = encoder.config.hidden_size, encoder.config.num_layers
    probe = jax.random.normal(jax.random.key(0) if key is None else key, (b, t, e), jnp.float32)
    weights = (attn != jnp.zeros((), attn.dtype)).astype(jnp.float32)
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

    def forward(params, deltas):  # noqa: ANN001, ANN202
        enc = nnx.merge(graphdef, params, rest)
        mask = padding_mask(attn)
        h = enc.embed(ids, deterministic=True) + deltas[0]
        stream = [h]
        for i, block in enumerate(enc.blocks):
            h = block(h, mask=mask, deterministic=True) + deltas[i + 1]
            stream.append(h)
        out = h if enc.final_norm is None else enc.final_norm(h)
        loss = jnp.sum(out.astype(jnp.float32) * probe * weights[..., None])
        return loss, (stream, out)

    @jax.jit
    def measure(params):  # noqa: ANN001, ANN202
        deltas = [jnp.zeros((b, t, e), jnp.float32) for _ in range(num_layers + 1)]
        (_, (stream, out)), (p_grad, d_grad) = jax.value_and_grad(
            forward, argnums=(0, 1), has_aux=True)(params, deltas)
        fwd = jnp.stack([_masked_mean_square(h, weights) for h in stream])
        upd = jnp.stack([_masked_mean_square(stream[i + 1] - stream[i], weights)
                         for i in range(num_layers)])
        # ∂ℓ/∂out = r at real tokens: normalise by its own second moment (≈ 1).
        top = _masked_mean_square(probe, weights)
        grad = jnp.stack([_masked_mean_square(g, weights) for g in d_grad]) / top
        kernels = [[jnp.mean(jnp.square(leaf)) for path, leaf in
                    jax.tree_util.tree_flatten_with_path(p_grad["blocks"][i])[0]
                    if jnp.ndim(leaf) == 2] for i in range(num_layers)]
        pg = jnp.stack([jnp.mean(jnp.stack(k)) for k in kernels])
        return fwd, upd, grad, pg, _masked_mean_square(out, weights)

    fwd, upd, grad, pg, out = jax.device_get(measure(params))
    return MomentReport(np.asarray(fwd), np.asarray(upd), np.asarray(grad), np.asarray(pg),
                        float(out))


def plot_moments(reports: Mapping[str, MomentReport], path: str | Path, *,
                 title: str | None = None) -> Path:
    """One PNG, three panels against the layer index: forward ``E[h_l²]``, gradient
    ``E[(∂ℓ/∂h_l)²]`` and block-parameter gradient, one line per named report (log y)."""
    # A bare Figure, not pyplot: no global backend switch (inline plots in notebooks survive).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    panels = (("forward", "forward  E[h_l²]"), ("grad", "backward  E[(∂ℓ/∂h_l)²]"),
              ("param_grad", "block kernels  E[(∂ℓ/∂W)²]"))
    for ax, (field, label) in zip(axes, panels):
        for name, rep in reports.items():
            values = getattr(rep, field)
            start = 1 if field == "param_grad" else 0
            ax.plot(np.arange(start, start + len(values)), values, marker=".", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("layer l (0 = embeddings)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path, title)


def _save(fig: Any, path: str | Path, title: str | None) -> Path:
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


class CoordCheck(NamedTuple):
    """`coord_check`'s result.

    Attributes:
      widths: the widths E, ascending.
      layers: names of the measured coordinates: ``"embed"``, ``"block_0"``..., ``"logits"``.
      l1: ``[W, S + 1, C]``: mean ``|x|`` of coordinate c at width w after s updates (s = 0 is
        init).
    """

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    l1: np.ndarray


def _activations(model: Any, batch: Mapping[str, Any]) -> list[jax.Array]:
    """Mean |x| of the embeddings, each block's output and the LM logits (deterministic)."""
    encoder = _encoder_of(model)
    ids, attn = _check_batch(batch)
    out = encoder(ids, attention_mask=attn, deterministic=True)
    values = [jnp.mean(jnp.abs(h)) for h in out.hidden_states]
    head = getattr(model, "head", None)
    if head is not None:
        values.append(jnp.mean(jnp.abs(head(out.last_hidden_state, encoder))))
    return values


def coord_check(
    make_model: Callable[[int], nnx.Module],
    widths: Sequence[int],
    *,
    batch: Mapping[str, Any],
    loss_fn: LossFn,
    make_tx: Callable[[nnx.Module], optax.GradientTransformation],
    steps: int = 3,
    key: PRNGKeyArray,
) -> CoordCheck:
    """μP's coordinate check on one fixed batch.

    Args:
      make_model: width E -> a fresh model (e.g. a `MaskedLM`); called once per width.
      widths: the widths to compare (sorted ascending in the result).
      batch: the batch every step trains on and every measurement reads.
      loss_fn: the ``loss_fn(model, batch, *, key, deterministic)`` of `make_train_step`.
      make_tx: model -> its optimizer (so μP can scale per-leaf learning rates by width).
      steps: S, the number of updates.
      key: the root key of every run (the same at every width).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    widths = tuple(sorted(int(w) for w in widths))
    if len(widths) < 2:
        raise ValueError(f"widths must hold at least 2 widths to compare, got {widths}")
    measure = nnx.jit(_activations)
    table, layers = [], None
    for width in widths:
        model = make_model(width)
        tx = make_tx(model)
        graphdef, state = init_train_state(model, tx)
        step = make_train_step(graphdef, tx, loss_fn, donate=False)
        rows = []
        for s in range(steps + 1):
            if s:
                state, _ = step(state, batch, key=key)
            rows.append([float(v) for v in measure(merge_model(graphdef, state), batch)])
        num_blocks = len(rows[0]) - 2
        names = ("embed", *(f"block_{i}" for i in range(num_blocks)), "logits")[:len(rows[0])]
        if layers is not None and names != layers:
            raise ValueError(f"make_model({width}) has layers {names}, width {widths[0]} had "
                             f"{layers}: only the width may change")
        layers = names
        table.append(rows)
    return CoordCheck(widths, layers, np.asarray(table))


def plot_coord_check(results: Mapping[str, CoordCheck], path: str | Path, *,
                     title: str | None = None) -> Path:
    """One row per parametrization, one panel per step: mean |x| against width (log-log),
    one line per coordinate; flat lines are what μP promises."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = list(results)
    steps = max(r.l1.shape[1] for r in results.values())
    fig = Figure(figsize=(3.1 * steps, 2.8 * len(names)))
    axes = fig.subplots(len(names), steps, squeeze=False, sharex=True)
    for row, name in enumerate(names):
        res = results[name]
        for s in range(res.l1.shape[1]):
            ax = axes[row, s]
            for c, layer in enumerate(res.layers):
                ax.plot(res.widths, res.l1[:, s, c], marker=".", label=layer,
                        color=colormaps["viridis"](c / max(len(res.layers) - 1, 1)))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{name}: step {s}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(names) - 1:
                ax.set_xlabel("width E")
        axes[row, 0].set_ylabel("mean |x|")
    axes[0, -1].legend(fontsize=6)
    return _save(fig, path, title)
