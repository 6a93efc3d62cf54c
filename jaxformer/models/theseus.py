"""BERT-of-Theseus as a module: a frozen predecessor classifier, a successor encoder, and the
forward pass that replaces predecessor modules by successor blocks (`jaxformer.replacement`).

Shape letters: B batch, T tokens, E width, C classes, J slots (modules, plus the embeddings
when they are in the draw). N / M (predecessor / successor block counts) and r = N / M are
numbers in the prose, not shape letters.

Who owns what:

- **predecessor**: a fine-tuned `SequenceClassifier` of N blocks; frozen (the task trains only
  `successor_filter`).
- **successor**: an `Encoder` of M blocks of the same width; only its blocks, and its
  embeddings when ``embeddings=True``, are trained.
- **the head** is the predecessor's and is shared, as in Su's code (one classifier Dense for
  both models, frozen during replacement): its final LayerNorm (pre-LN encoders), pooler and
  classifier. With ``embeddings=False`` the embeddings are the predecessor's too (the official
  code: only ``scc_layer`` is new).

"The successor" is therefore the model `successor_classifier` assembles: the successor's
blocks (and embeddings when drawn) under the predecessor's head; inference
(``weights=None``) runs it alone, as Su's ``K.in_train_phase(output, target)`` does.

Compute (``compute``): ``"cond"`` puts each module behind a `lax.cond` on its batch-level
weight, so XLA runs only the chosen branch (both branches are compiled once, into one
executable, whatever the draws); ``"select"`` runs both and keeps one with `jnp.where` (Su's
``mask * source + (1 - mask) * target``), which per-example draws and continuous weights need.

Dropout keys: for a forward pass with ``key=k``, the predecessor's encoder uses
``fold_in(k, 0)`` (as its `SequenceClassifier` would), the head ``fold_in(k, 1)`` (likewise),
and the successor's encoder ``fold_in(k, 2)``; block i of either stack keeps its own stage key,
so with all weights 0 the output equals ``predecessor(..., key=k)`` bit for bit.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, PRNGKeyArray

from jaxformer import functional as F

from jaxformer.models.config import ROTARY_POSITIONS
from jaxformer.models.encoder import Encoder, block_mask, check_token_inputs
from jaxformer.models.heads import SequenceClassifier
from jaxformer.replacement import blend, module_groups

COMPUTES = ("cond", "select")
SUCCESSOR_KEY_STREAM = 2


def truncate_encoder(encoder: Encoder, num_layers: int) -> Encoder:
    """A new encoder with `encoder`'s embeddings, first `num_layers` blocks, final norm and
    pooler (copies). It is both the truncation baseline and how a successor starts: from the
    pretrained encoder (Su's code) or from the fine-tuned predecessor's (the official code)."""
    n = encoder.config.num_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= n:
        raise ValueError(f"num_layers must be an int in [1, {n}] (the encoder's block count), "
                         f"got {num_layers!r}")
    cfg = dataclasses.replace(encoder.config, num_layers=num_layers)
    graphdef, target = nnx.split(nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0))))
    source = nnx.state(encoder)
    wanted = {path for path, _ in nnx.to_flat_state(target)}
    flat = [(path, jax.tree.map(jnp.copy, value)) for path, value in nnx.to_flat_state(source)
            if path in wanted]
    missing = wanted - {path for path, _ in flat}
    if missing:  # cannot happen for an Encoder; guards a subclass with other variables
        raise ValueError(f"truncate_encoder: the encoder lacks {sorted(missing)[:3]}")
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _check_pair(pred: Any, succ: Any, embeddings: bool) -> int:
    """r after checking predecessor and successor configs can be mixed (errors name both)."""
    if pred.hidden_size != succ.hidden_size:
        raise ValueError(f"predecessor and successor widths must match (each module's output "
                         f"feeds the other model's next module): predecessor hidden_size="
                         f"{pred.hidden_size}, successor hidden_size={succ.hidden_size}")
    same = ["norm", "use_pooler"]
    if embeddings:  # the successor's embeddings must read the same inputs
        same += ["vocab_size", "type_vocab_size", "position", "max_position_embeddings"]
    for name in same:
        a, b = getattr(pred, name), getattr(succ, name)
        if a != b:
            raise ValueError(f"predecessor and successor configs must agree on {name}: "
                             f"predecessor {a!r}, successor {b!r}")
    return module_groups(pred.num_layers, succ.num_layers)


class TheseusClassifier(nnx.Module):
    """A predecessor `SequenceClassifier` and a successor `Encoder` mixed by module (module doc).

    Args:
      predecessor: the fine-tuned classifier (N blocks); held, not copied.
      successor: the successor encoder (M blocks, M divides N, same width); held, not copied.
      embeddings: put the embedding layer in the draw (slot 0), as Su's code does.
    """

    def __init__(self, predecessor: SequenceClassifier, successor: Encoder, *,
                 embeddings: bool = False):
        if not isinstance(predecessor, SequenceClassifier):
            raise TypeError(f"predecessor must be a SequenceClassifier, "
                            f"got {type(predecessor).__name__}")
        if not isinstance(successor, Encoder):
            raise TypeError(f"successor must be an Encoder, got {type(successor).__name__}")
        self.group = _check_pair(predecessor.encoder.config, successor.config, embeddings)
        self.predecessor = predecessor
        self.successor = successor
        self.embeddings = bool(embeddings)

    @property
    def num_modules(self) -> int:
        """M, the successor's block count."""
        return self.successor.config.num_layers

    @property
    def num_slots(self) -> int:
        """J: the modules, plus one for the embeddings when they are in the draw."""
        return self.num_modules + int(self.embeddings)

    def __call__(
        self,
        input_ids: Array,
        *,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        weights: Float[Array, "J"] | Float[Array, "J B"] | None = None,
        compute: str = "cond",
        binary: bool = True,
    ) -> Float[Array, "B C"]:
        """Class logits ``[B, C]``.

        Args:
          input_ids, attention_mask, token_type_ids: as `SequenceClassifier`.
          deterministic: False enables dropout (then `key` is needed).
          key: dropout key (module doc for its streams).
          weights: successor weights, ``[J]`` (per batch) or ``[J, B]`` (per example), slot 0
            the embeddings when they are drawn; None runs the successor alone (inference).
          compute: ``"cond"`` (only the chosen branch runs; needs ``[J]`` binary weights) or
            ``"select"`` (both run).
          binary: the weights are 0/1 (a select); False blends ``(1 - s) x_p + s x_s``.
        """
        pred_enc, succ_enc = self.predecessor.encoder, self.successor
        cfg = pred_enc.config
        check_token_inputs(cfg, input_ids, attention_mask, token_type_ids, None)
        if self.embeddings:
            check_token_inputs(succ_enc.config, input_ids, attention_mask, token_type_ids, None)
        if not deterministic and key is None and self._has_dropout():
            raise ValueError("deterministic=False needs key= (a PRNG key for dropout), got None")
        batch = input_ids.shape[0]
        if weights is not None:
            self._check_weights(weights, batch, compute, binary)
        keys = (None, None, None) if key is None else tuple(
            jax.random.fold_in(key, s) for s in (0, 1, SUCCESSOR_KEY_STREAM))
        pred_key, head_key, succ_key = keys
        stage = (lambda k, s: None if k is None else jax.random.fold_in(k, s))  # noqa: E731
        mask = None if attention_mask is None else block_mask(attention_mask)
        positions = None  # RoPE's default 0..T-1; absolute positions live in the embeddings
        run = dict(mask=mask, deterministic=deterministic, positions=positions)
        embed_args = dict(token_type_ids=token_type_ids, deterministic=deterministic)

        def embed_with(encoder: Encoder, k: Any) -> Array:
            return encoder.embed(input_ids, **embed_args, key=stage(k, 0))

        # Embeddings: slot 0 when drawn, else always the predecessor's.
        if self.embeddings and weights is None:
            h = embed_with(succ_enc, succ_key)
        elif self.embeddings:
            h = self._choose(weights[0], compute, binary,
                             lambda: embed_with(pred_enc, pred_key),
                             lambda: embed_with(succ_enc, succ_key))
        else:
            h = embed_with(pred_enc, pred_key)
        first = int(self.embeddings)
        r = self.group
        for i in range(self.num_modules):
            def pred_module(x: Array, i: int = i) -> Array:
                return pred_enc.blocks.run(x, start=i * r, stop=(i + 1) * r, key=pred_key, **run)[0]

            def succ_module(x: Array, i: int = i) -> Array:
                return succ_enc.blocks.run(x, start=i, stop=i + 1, key=succ_key, **run)[0]

            if weights is None:
                h = succ_module(h)
            else:
                h = self._choose(weights[first + i], compute, binary,
                                 lambda x=h, f=pred_module: f(x), lambda x=h, f=succ_module: f(x))
        return self._head(h, deterministic=deterministic, key=head_key)

    def _head(self, h: Array, *, deterministic: bool, key: Any) -> Array:
        """The predecessor's final norm, pooler, dropout and classifier (shared and frozen)."""
        enc = self.predecessor.encoder
        if enc.final_norm is not None:
            h = enc.final_norm(h)
        features = enc.pooler(h) if enc.pooler is not None else h[:, 0, :]
        features = F.dropout(features, self.predecessor.dropout_rate, key=key,
                             deterministic=deterministic)
        return self.predecessor.classifier(features)

    @staticmethod
    def _choose(weight: Array, compute: str, binary: bool, pred_fn: Any, succ_fn: Any) -> Array:
        """The module's output: a `lax.cond` on a batch-level 0/1 weight, else both + a mix."""
        if compute == "cond" and weight.ndim == 0 and binary:
            return jax.lax.cond(weight > 0.5, succ_fn, pred_fn)
        return blend(pred_fn(), succ_fn(), weight, binary=binary)

    def _check_weights(self, weights: Array, batch: int, compute: str, binary: bool) -> None:
        if compute not in COMPUTES:
            raise ValueError(f"compute must be one of {list(COMPUTES)}, got {compute!r}")
        if not jnp.issubdtype(weights.dtype, jnp.floating):
            raise TypeError(f"weights must be a float array of successor weights in [0, 1], "
                            f"got dtype {weights.dtype}")
        allowed = [(self.num_slots,), (self.num_slots, batch)]
        if tuple(weights.shape) not in allowed:
            raise ValueError(f"weights must have shape [J] = {allowed[0]} or [J, B] = "
                             f"{allowed[1]} (J = {self.num_modules} modules"
                             f"{' + embeddings' if self.embeddings else ''}), "
                             f"got {tuple(weights.shape)}")
        if compute == "cond" and (weights.ndim != 1 or not binary):
            raise ValueError("compute='cond' needs one binary weight per slot per batch ([J], "
                             "binary=True); per-example or continuous weights need "
                             "compute='select'")

    def _has_dropout(self) -> bool:
        configs = (self.predecessor.encoder.config, self.successor.config)
        return self.predecessor.dropout_rate > 0 or any(
            c.hidden_dropout > 0 or c.attention_dropout > 0 for c in configs)


def successor_filter(model: TheseusClassifier) -> Any:
    """The NNX filter of the variables replacement training updates: the successor's blocks,
    and its embeddings when they are in the draw (`jaxformer.train.loop.train_loop`'s
    ``trainable``). Everything else, the predecessor and the head included, stays frozen."""
    parts = [nnx.PathContains("blocks")]
    if model.embeddings:
        parts.append(nnx.PathContains("embed"))
    return nnx.All(nnx.Param, nnx.PathContains("successor"), nnx.Any(*parts))


def successor_classifier(model: TheseusClassifier) -> SequenceClassifier:
    """The successor alone as a new `SequenceClassifier` (copies, nothing shared): its blocks
    (and its embeddings when drawn, else the predecessor's) under the predecessor's head. Its
    logits equal ``model(..., weights=None)``; fine-tune it by itself afterwards (Su: all of it
    trains)."""
    pred = model.predecessor
    succ_cfg = model.successor.config
    pred_cfg = pred.encoder.config
    # The embedding fields follow whichever embeddings the successor uses.
    embed_fields = ("vocab_size", "type_vocab_size", "position", "max_position_embeddings",
                    "embedding_size")
    source = succ_cfg if model.embeddings else pred_cfg
    cfg = dataclasses.replace(succ_cfg, **{f: getattr(source, f) for f in embed_fields})
    shell = nnx.eval_shape(lambda: SequenceClassifier(
        Encoder(cfg, rngs=nnx.Rngs(0)), pred.num_labels, rngs=nnx.Rngs(0),
        dropout=pred.dropout_rate))
    graphdef, _ = nnx.split(shell)
    flat = []
    for path, value in nnx.to_flat_state(nnx.state(model)):
        owner, rest = path[0], path[1:]
        if owner == "successor" and rest[0] == "blocks":
            flat.append((("encoder", *rest), value))
        elif owner == "successor" and rest[0] == "embed" and model.embeddings:
            flat.append((("encoder", *rest), value))
        elif owner == "predecessor" and rest[0] == "encoder" and rest[1] == "embed" \
                and not model.embeddings:
            flat.append((rest, value))
        elif owner == "predecessor" and rest[0] == "encoder" and rest[1] in ("final_norm",
                                                                              "pooler"):
            flat.append((rest, value))
        elif owner == "predecessor" and rest[0] == "classifier":
            flat.append((rest, value))
    flat = [(p, jax.tree.map(jnp.copy, v)) for p, v in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))
