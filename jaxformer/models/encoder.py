"""The BERT-family encoder in Flax NNX: embeddings, a stack of blocks, a pooler.

Shape letters: B batch, T tokens, E width, H heads, D head dim, F FFN width, L layers.

Positions are a config value: ``position="absolute"`` adds a learned table to the embeddings
(BERT); ``position="rope"`` has no table and rotates q and k (and v with ``rotary_value``) in
every layer's attention by `jaxformer.rope.apply_rope` (RoFormer, Su et al. 2021);
``position="rope_mixed"`` does the same with learned per-layer frequencies ``[H, A, D/2]``
(RoPE-Mixed, Heo et al. 2024). Blocks take positions ``[B|1, T]`` or, with ``rope_axes=A``,
``[B|1, T, A]`` (2D RoPE over a patch grid: `jaxformer.models.vision`).

The forward pass is ``embed -> blocks[0..L-1] -> pooler``, and each stage can be called on its
own, so BERT-of-Theseus (swap blocks) and SimCSE (choose a pooling over any layer) are short
functions over these hooks::

    h = model.embed(ids, token_type_ids=tt, deterministic=True)
    mask = padding_mask(attention_mask)                # [B, 1, 1, T]
    for block in model.blocks:
        h = block(h, mask=mask, deterministic=True)    # RoPE: positions=, default 0..T-1
    pooled = model.pooler(h)

Randomness is explicit: a forward pass with ``deterministic=False`` takes ``key=`` and derives
one key per stage with ``fold_in(key, stage)`` (stage 0 = embeddings, i + 1 = block i), so the
same key reproduces the same dropout masks in any process.
"""


from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Integer, PRNGKeyArray, Real

from jaxformer import functional as F
from jaxformer.attention import AttentionKernel, causal_mask, padding_mask, softmax_attention
from jaxformer.linear_attention import linear_attention
from jaxformer.models.config import ROTARY_POSITIONS, EncoderConfig
from jaxformer.models.modules import Dense, Embedding, norm_layer, split_key
from jaxformer.models.parametrization import (ResidualGate, embedding_init, kernel_init,
                                              kernel_multiplier)
from jaxformer.residual import residual_add
from jaxformer.rope import apply_rope, rope_mixed_init

# config.attention -> kernel with the `AttentionKernel` signature. RoPE is a `position` value:
# it rotates q and k before these kernels run. `attention="linear"` is not in this table: it
# takes its options from the config and applies RoPE itself, to the numerator's features only
# (`SelfAttention._linear`).
ATTENTION_KERNELS: dict[str, AttentionKernel] = {"softmax": softmax_attention}


class EncoderOutput(NamedTuple):
    """What the encoder returns (a pytree, so it passes through `jit`).

    Attributes:
      last_hidden_state: ``[B, T, E]``, the final representation (after the final LayerNorm
        for ``norm="pre"``).
      hidden_states: ``L + 1`` arrays ``[B, T, E]``: the embeddings output, then every block's
        output, as HF's ``output_hidden_states=True``.
      pooled: ``[B, E]`` BERT pooler output, or None when the config has no pooler.
    """

    last_hidden_state: Float[Array, "B T E"]
    hidden_states: tuple[Float[Array, "B T E"], ...]
    pooled: Float[Array, "B E"] | None


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_token_inputs(
    cfg: EncoderConfig,
    input_ids: Array,
    attention_mask: Array | None,
    token_type_ids: Array | None,
    position_ids: Array | None,
) -> None:
    """Validate encoder inputs, with errors that name the argument, the expected and the actual.

    Shape and dtype checks run at trace time; value-range checks run only on concrete arrays
    (an out-of-range id inside `jit` yields NaN rows instead, never a silent clamp).
    """
    ids = input_ids
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(
            f"input_ids must be an integer array of token ids, got dtype {ids.dtype}; "
            "did you pass embeddings or forget .astype(int32)?"
        )
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have rank 2 [B, T], got rank {ids.ndim} shape {tuple(ids.shape)}")
    batch, length = ids.shape
    # RoPE has no table, so it takes any length and any position (HF RoFormer's sinusoidal
    # buffer stops at max_position_embeddings; ours computes the angles on the fly).
    if cfg.position == "absolute" and length > cfg.max_position_embeddings:
        raise ValueError(
            f"input_ids has T={length} tokens but max_position_embeddings="
            f"{cfg.max_position_embeddings}; truncate the input (tokenizer max_length)"
        )
    for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                      ("position_ids", position_ids)):
        if arr is None:
            continue
        if arr.shape != ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(arr.shape)}; expected [B, T] = {(batch, length)} "
                "like input_ids"
            )
        if name != "attention_mask" and not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    ranged = [("input_ids", ids, cfg.vocab_size),
              ("token_type_ids", token_type_ids, cfg.type_vocab_size)]
    if cfg.position == "absolute":
        ranged.append(("position_ids", position_ids, cfg.max_position_embeddings))
    for name, arr, limit in ranged:
        if arr is None or not _is_concrete(arr) or arr.size == 0:
            continue
        # np.asarray first: a concrete array closed over by a jitted function would otherwise
        # dispatch np.min to jnp and come back as a tracer.
        values = np.asarray(arr)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= limit:
            raise ValueError(f"{name} must lie in [0, {limit}), got values in [{lo}, {hi}]")


class Embeddings(nnx.Module):
    """Token + learned absolute position (``position="absolute"`` only) + segment embeddings,
    then LayerNorm, dropout and, when ``embedding_size != hidden_size``, a Dense to E."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        init = embedding_init(cfg)
        width = cfg.embedding_width
        self.word = Embedding(cfg.vocab_size, width, init=init, rngs=rngs)
        self.position = (Embedding(cfg.max_position_embeddings, width, init=init, rngs=rngs)
                         if cfg.position == "absolute" else None)
        self.token_type = (Embedding(cfg.type_vocab_size, width, init=init, rngs=rngs)
                           if cfg.type_vocab_size > 0 else None)
        self.norm = norm_layer(cfg.norm_type, width, eps=cfg.layer_norm_eps)
        self.dropout_rate = cfg.hidden_dropout
        # HF RoFormer's `embeddings_project`: after LayerNorm and dropout, as there.
        self.project = (Dense(width, cfg.hidden_size, init=kernel_init(cfg, "embedding_project"),
                              multiplier=kernel_multiplier(cfg, width), rngs=rngs)
                        if width != cfg.hidden_size else None)

    def __call__(
        self,
        input_ids: Integer[Array, "B T"],
        *,
        token_type_ids: Integer[Array, "B T"] | None = None,
        position_ids: Integer[Array, "B T"] | None = None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "B T E"]:
        h = self.word(input_ids)
        if self.position is not None:
            if position_ids is None:
                position_ids = jnp.arange(input_ids.shape[1], dtype=jnp.int32)[None, :]
            h = h + self.position(position_ids)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            h = h + self.token_type(token_type_ids)
        h = self.norm(h)
        h = F.dropout(h, self.dropout_rate, key=key, deterministic=deterministic)
        return h if self.project is None else self.project(h)


class SelfAttention(nnx.Module):
    """Multi-head self-attention: project to q, k, v ``[B, T, H, D]``, call the kernel, project back.

    With ``position="rope"``, q and k (and v when ``rotary_value``) are rotated by
    `jaxformer.rope.apply_rope` at ``positions`` between the reshape and the kernel, over the
    full head dim, so the scores depend on positions only through their differences.
    ``position="rope_mixed"`` holds a learned ``rope_freqs`` Param ``[H, A, D/2]`` and passes it
    to `apply_rope` as ``freqs=`` (pair i of head h turns by ``sum_a p_a F[h, a, i]``).

    ``causal=True`` adds the lower-triangular mask (softmax) or runs the causal form (linear).
    With ``attention="linear"`` the mask must be a key-padding mask ``[B, 1, 1, S]`` and RoPE
    rotates φ(q), φ(k) in the numerator only (Su's recipe, RoFormer §3.3).
    """

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        e = cfg.hidden_size
        dense = lambda role: Dense(e, e, init=kernel_init(cfg, role),  # noqa: E731
                                   multiplier=kernel_multiplier(cfg, e), rngs=rngs)
        self.query = dense("query")
        self.key = dense("key")
        self.value = dense("value")
        self.output = dense("attention_output")
        # 1/√D, or 1 when T5 folds it into the q init (or post 8's bug), or μP's √D_base/D.
        self.logit_scale = cfg.logit_scale
        self.num_heads = cfg.num_heads
        self.kernel_name = cfg.attention
        self.dropout_rate = cfg.attention_dropout
        self.rope = cfg.position in ROTARY_POSITIONS
        self.rope_axes = cfg.rope_axes
        # Drawn after the projections, so configs without it keep their init stream.
        self.rope_freqs = (nnx.Param(rope_mixed_init(
            rngs.params(), num_heads=cfg.num_heads, axes=cfg.rope_axes, rotary_dim=cfg.head_dim,
            base=cfg.rope_base)) if cfg.position == "rope_mixed" else None)
        self.rope_layout = cfg.rope_layout
        self.rope_base = cfg.rope_base
        self.rotary_value = cfg.rotary_value
        self.causal = cfg.causal
        # A tuple of pairs, not a dict: NNX would treat a dict attribute as a graph node.
        self.linear_options = (("feature_map", cfg.linear_feature_map),
                               ("normalize", cfg.linear_normalize), ("mode", cfg.linear_mode),
                               ("chunk_size", cfg.linear_chunk_size))

    def __call__(
        self,
        x: Float[Array, "B T E"],
        *,
        mask: Bool[Array, "b h t T"] | None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Real[Array, "b T"] | Real[Array, "b T A"] | None = None,
    ) -> Float[Array, "B T E"]:
        """``positions`` (``[B|1, T]`` or ``[B|1, T, A]``; default ``0..T-1`` when
        ``rope_axes=1``) are used by RoPE only."""
        b, t, e = x.shape
        heads = lambda y: y.reshape(b, t, self.num_heads, e // self.num_heads)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if self.rope:
            if positions is None:
                if self.rope_axes != 1:
                    raise ValueError(
                        f"positions must be given as [B|1, T, A={self.rope_axes}] for rope_axes="
                        f"{self.rope_axes} (e.g. the (row, col) of each patch), got None")
                positions = jnp.arange(t, dtype=jnp.int32)[None, :]
            want_axes = 1 if positions.ndim == 2 else positions.shape[-1]
            if want_axes != self.rope_axes:
                raise ValueError(
                    f"positions have shape {tuple(positions.shape)} (A={want_axes} axes); expected "
                    f"[B|1, T{'' if self.rope_axes == 1 else f', {self.rope_axes}'}] for "
                    f"rope_axes={self.rope_axes}")
            freqs = "geometric" if self.rope_freqs is None else self.rope_freqs[...]
            rope_options = dict(layout=self.rope_layout, base=self.rope_base, freqs=freqs)
            rotate = lambda y: apply_rope(y, positions, **rope_options)  # noqa: E731
            if self.kernel_name != "linear":
                q, k = rotate(q), rotate(k)
            if self.rotary_value:
                v = rotate(v)
        if self.kernel_name == "linear":
            out = self._linear(q, k, v, mask, positions if self.rope else None,
                               rope_options if self.rope else None)
        else:
            if self.causal:
                mask = causal_mask(t) if mask is None else mask & causal_mask(t)
            kernel = ATTENTION_KERNELS[self.kernel_name]
            out = kernel(q, k, v, mask=mask, dropout_rate=self.dropout_rate, key=key,
                         deterministic=deterministic, scale=self.logit_scale)
        return self.output(out.reshape(b, t, e))

    def _linear(self, q, k, v, mask, positions, rope_options):  # noqa: ANN001, ANN202
        key_mask = None
        if mask is not None:
            if mask.ndim != 4 or mask.shape[1:3] != (1, 1):
                raise ValueError(
                    f"attention='linear' takes a key-padding mask [B, 1, 1, S], got shape "
                    f"{tuple(mask.shape)}; use causal=True in the config for causal attention")
            key_mask = jnp.broadcast_to(mask[:, 0, 0, :], (q.shape[0], k.shape[1]))
        return linear_attention(q, k, v, causal=self.causal, mask=key_mask,
                                rope_positions=positions, rope_options=rope_options,
                                **dict(self.linear_options))


class FeedForward(nnx.Module):
    """The position-wise FFN ``act(x W1 + b1) W2 + b2`` with ``W1: [E, F]``."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.intermediate = Dense(e, f, init=kernel_init(cfg, "ffn_in"),
                                  multiplier=kernel_multiplier(cfg, e), rngs=rngs)
        self.output = Dense(f, e, init=kernel_init(cfg, "ffn_out"),
                            multiplier=kernel_multiplier(cfg, f), rngs=rngs)
        self.act_name = cfg.hidden_act

    def __call__(self, x: Float[Array, "B T E"]) -> Float[Array, "B T E"]:
        return F.feed_forward(
            x, self.intermediate.kernel[...], self.intermediate.bias[...],
            self.output.kernel[...], self.output.bias[...], act=F.activation(self.act_name),
            multipliers=(self.intermediate.multiplier, self.output.multiplier),
        )


class Block(nnx.Module):
    """One Transformer block: attention and FFN sub-layers, each with a residual and a norm.

    For each sub-layer S (attention, then FFN) with ``α`` the DeepNorm weight (1 unless
    ``residual="deepnorm"``) and ``g`` the ReZero gate (1 unless ``residual="rezero*"``):

    * ``norm="post"`` (BERT, DeepNorm): ``x <- N(α x + g Drop(S(x)))``;
    * ``norm="pre"``: ``x <- x + g Drop(S(N(x)))``;
    * ``norm="none"`` (ReZero without norm): ``x <- x + g Drop(S(x))``.

    N is LayerNorm or RMSNorm (``norm_type``). See `jaxformer.residual` for why each exists.
    """

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        e = cfg.hidden_size
        self.attention = SelfAttention(cfg, rngs=rngs)
        self.attention_norm = (norm_layer(cfg.norm_type, e, eps=cfg.layer_norm_eps)
                               if cfg.norm != "none" else None)
        self.ffn = FeedForward(cfg, rngs=rngs)
        self.ffn_norm = (norm_layer(cfg.norm_type, e, eps=cfg.layer_norm_eps)
                         if cfg.norm != "none" else None)
        self.norm_position = cfg.norm
        self.dropout_rate = cfg.hidden_dropout
        self.residual_alpha = cfg.deepnorm_alpha_beta[0]
        # ReZero's α per sub-layer, 0 at init: learned (a Param) or ramped (a ResidualGate).
        gate = {"rezero": nnx.Param, "rezero_ramp": ResidualGate}.get(cfg.residual)
        self.attention_gate = None if gate is None else gate(jnp.zeros((), jnp.float32))
        self.ffn_gate = None if gate is None else gate(jnp.zeros((), jnp.float32))

    def __call__(
        self,
        x: Float[Array, "B T E"],
        *,
        mask: Bool[Array, "b h t T"] | None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Real[Array, "b T"] | Real[Array, "b T A"] | None = None,
    ) -> Float[Array, "B T E"]:
        """``positions`` ``[B|1, T]`` or ``[B|1, T, A]`` go to the attention's RoPE (default
        ``0..T-1``)."""
        k_attn, k_attn_out, k_ffn_out = split_key(key, 3)
        drop = lambda y, k: F.dropout(y, self.dropout_rate, key=k, deterministic=deterministic)  # noqa: E731
        attend = lambda y: self.attention(y, mask=mask, deterministic=deterministic,  # noqa: E731
                                          key=k_attn, positions=positions)
        h = self._sublayer(x, attend, self.attention_norm, self.attention_gate,
                           lambda y: drop(y, k_attn_out))
        return self._sublayer(h, self.ffn, self.ffn_norm, self.ffn_gate,
                              lambda y: drop(y, k_ffn_out))

    def _sublayer(self, x, fn, norm, gate, drop):  # noqa: ANN001, ANN202
        g = 1.0 if gate is None else gate[...]
        if self.norm_position == "pre":
            return residual_add(x, drop(fn(norm(x))), gate=g)
        y = residual_add(x, drop(fn(x)), alpha=self.residual_alpha, gate=g)
        return y if norm is None else norm(y)


class Pooler(nnx.Module):
    """BERT's pooler: ``tanh(W h[:, 0] + b)``."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.dense = Dense(cfg.hidden_size, cfg.hidden_size, init=kernel_init(cfg, "pooler"),
                           multiplier=kernel_multiplier(cfg, cfg.hidden_size), rngs=rngs)

    def __call__(self, hidden: Float[Array, "B T E"]) -> Float[Array, "B E"]:
        return jnp.tanh(self.dense(hidden[:, 0, :]))


class Encoder(nnx.Module):
    """A BERT-family encoder: ``embed``, ``blocks[i]`` and ``pooler`` are public hooks."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = Embeddings(cfg, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = (norm_layer(cfg.norm_type, cfg.hidden_size, eps=cfg.layer_norm_eps)
                           if cfg.norm == "pre" else None)
        self.pooler = Pooler(cfg, rngs=rngs) if cfg.use_pooler else None

    def __call__(
        self,
        input_ids: Array,
        *,
        attention_mask: Array | None = None,
        token_type_ids: Array | None = None,
        position_ids: Array | None = None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
    ) -> EncoderOutput:
        # Inputs are annotated as plain `Array`: `check_token_inputs` validates them with
        # messages that name the argument, which a generic type-check error would pre-empt.
        """Run the encoder.

        Args:
          input_ids: ``[B, T]`` integer token ids.
          attention_mask: ``[B, T]``, 1 (or True) for real tokens, 0 for padding.
          token_type_ids: ``[B, T]`` segment ids; zeros when omitted.
          position_ids: ``[B, T]`` positions, looked up in the table (``"absolute"``) or
            turned into RoPE angles (``"rope"``); ``0..T-1`` when omitted.
          deterministic: False enables dropout, which then needs `key`.
          key: PRNG key for dropout; stage s uses ``fold_in(key, s)``.

        Returns:
          An :class:`EncoderOutput`.
        """
        check_token_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        if not deterministic and key is None and self._has_dropout():
            raise ValueError("deterministic=False needs key= (a PRNG key for dropout), got None")
        stage_key = (lambda s: None) if key is None else (lambda s: jax.random.fold_in(key, s))  # noqa: E731
        mask = None if attention_mask is None else padding_mask(attention_mask)
        rope_positions = position_ids if self.config.position in ROTARY_POSITIONS else None
        h = self.embed(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                       deterministic=deterministic, key=stage_key(0))
        if self.config.scan_layers:
            h, hidden_states = self._scan_blocks(h, mask=mask, deterministic=deterministic,
                                                 key=key, positions=rope_positions)
        else:
            hidden_states = [h]
            for i, block in enumerate(self.blocks):
                h = block(h, mask=mask, deterministic=deterministic, key=stage_key(i + 1),
                          positions=rope_positions)
                hidden_states.append(h)
        if self.final_norm is not None:
            h = self.final_norm(h)
        pooled = None if self.pooler is None else self.pooler(h)
        return EncoderOutput(h, tuple(hidden_states), pooled)

    def _scan_blocks(self, h, *, mask, deterministic, key, positions):  # noqa: ANN001, ANN202
        """The blocks as one `lax.scan`: ``h_{i+1} = block_i(h_i)`` with block i's state sliced
        from the stacked states, and block i's dropout key ``fold_in(key, i + 1)`` as in the loop.

        Why: in an unrolled Pre-LN stack the stream's cotangent is a chain of elementwise adds
        (of each norm's backward) across all L blocks, which XLA fuses, and duplicates, into the
        consumers of every block, so compile time and step time grow much faster than L. A loop
        body is a fusion boundary, and XLA compiles it once whatever L is. The stacking copies
        the parameters once per call, which is small next to the blocks' FLOPs.
        """
        graphdef, _ = nnx.split(self.blocks[0])
        states = [nnx.split(block)[1] for block in self.blocks]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        keys = (None if key is None else
                jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(1, len(states) + 1)))

        def body(carry, xs):  # noqa: ANN001, ANN202
            state, k = xs
            out = nnx.merge(graphdef, state)(carry, mask=mask, deterministic=deterministic,
                                              key=k, positions=positions)
            return out, out

        out, per_block = jax.lax.scan(body, h, (stacked, keys))
        return out, [h, *(per_block[i] for i in range(len(states)))]

    def _has_dropout(self) -> bool:
        return self.config.hidden_dropout > 0 or self.config.attention_dropout > 0
