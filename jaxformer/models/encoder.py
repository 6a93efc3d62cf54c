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
from jaxformer.attention import padding_mask
from jaxformer.models.attention_kernels import bind_attention
from jaxformer.models.block_stack import BlockStack
from jaxformer.models.config import ROTARY_POSITIONS, EncoderConfig
from jaxformer.models.modules import Embedding, split_key
from jaxformer.models.parametrization import ResidualGate, dense, embedding_init, norm
from jaxformer.residual import residual_add
from jaxformer.rope import rope_mixed_init


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
    if attention_mask is not None and attention_mask.ndim in (3, 4):
        _check_full_mask(cfg, attention_mask, batch, length)
        attention_mask = None  # checked: the [B, T] checks below are for padding masks
    for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                      ("position_ids", position_ids)):
        if arr is None:
            continue
        if arr.shape != ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(arr.shape)}; expected [B, T] = {(batch, length)} "
                "like input_ids" + (_FULL_MASK_HINT if name == "attention_mask" else "")
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


_FULL_MASK_HINT = (", or a boolean attention mask [B|1, T, T] or [B|1, 1|H, T, T] "
                   "(True = may attend)")


def _check_full_mask(cfg: EncoderConfig, mask: Array, batch: int, length: int) -> None:
    """A full attention mask: boolean ``[B|1, T, T]`` or ``[B|1, 1|H, T, T]``."""
    heads = cfg.num_heads
    lead_ok = mask.shape[0] in (1, batch) and (mask.ndim == 3 or mask.shape[1] in (1, heads))
    if not lead_ok or tuple(mask.shape[-2:]) != (length, length):
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)}; expected [B, T] = {(batch, length)} "
            f"like input_ids{_FULL_MASK_HINT} with B={batch}, H={heads}, T={length}")
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"a rank-{mask.ndim} attention_mask must be boolean (True = may attend), got dtype "
            f"{mask.dtype}; an additive float mask (0 = attend, -inf = blocked) converts with "
            "`mask == 0`")


def block_mask(attention_mask: Array) -> Bool[Array, "b h t T"]:
    """The blocks' mask from the encoder's ``attention_mask``: a ``[B, T]`` padding mask becomes
    ``[B, 1, 1, T]`` (`padding_mask`), a full mask ``[B|1, T, T]`` gains its head axis, and
    ``[B|1, 1|H, T, T]`` passes unchanged."""
    if attention_mask.ndim == 2:
        return padding_mask(attention_mask)
    return attention_mask[:, None] if attention_mask.ndim == 3 else attention_mask


class Embeddings(nnx.Module):
    """Token + learned absolute position (``position="absolute"`` only) + segment embeddings,
    then LayerNorm, dropout and, when ``embedding_size != hidden_size``, a Dense to E."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        init = embedding_init(cfg)
        width = cfg.embedding_width
        table = lambda n: Embedding(n, width, init=init, rngs=rngs,  # noqa: E731
                                    param_dtype=jnp.dtype(cfg.param_dtype))
        self.word = table(cfg.vocab_size)
        self.position = table(cfg.max_position_embeddings) if cfg.position == "absolute" else None
        self.token_type = table(cfg.type_vocab_size) if cfg.type_vocab_size > 0 else None
        self.norm = norm(cfg, width)
        self.dropout_rate = cfg.hidden_dropout
        self.dtype = cfg.dtype
        # HF RoFormer's `embeddings_project`: after LayerNorm and dropout, as there.
        self.project = (dense(cfg, width, cfg.hidden_size, "embedding_project", rngs=rngs)
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
        # The sum and its LayerNorm in the tables' dtype (statistics fp32 anyway), then the
        # compute dtype from here on.
        h = self.norm(h).astype(self.dtype)
        h = F.dropout(h, self.dropout_rate, key=key, deterministic=deterministic)
        return h if self.project is None else self.project(h)


class SelfAttention(nnx.Module):
    """Multi-head self-attention: project to q, k, v ``[B, T, H, D]``, call the bound kernel,
    project back.

    The kernel is `jaxformer.models.bind_attention(cfg)`: softmax (XLA, fused or flash, by
    ``attention_impl``) or linear attention, with RoPE, causality, dropout and precision bound
    from the config (`jaxformer.models.attention_kernels`); the block knows none of them by name.
    ``position="rope_mixed"`` holds a learned ``rope_freqs`` Param ``[H, A, D/2]`` and passes it
    to the kernel as ``freqs`` (pair i of head h turns by ``sum_a p_a F[h, a, i]``).
    """

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        e = cfg.hidden_size
        self.query = dense(cfg, e, e, "query", rngs=rngs)
        self.key = dense(cfg, e, e, "key", rngs=rngs)
        self.value = dense(cfg, e, e, "value", rngs=rngs)
        self.output = dense(cfg, e, e, "attention_output", rngs=rngs)
        self.num_heads = cfg.num_heads
        # A frozen (hashable) dataclass: static in the graph, and the key `bind_attention`
        # caches the bound kernel under.
        self.config = cfg
        # Drawn after the projections, so configs without it keep their init stream.
        self.rope_freqs = (nnx.Param(rope_mixed_init(
            rngs.params(), num_heads=cfg.num_heads, axes=cfg.rope_axes, rotary_dim=cfg.head_dim,
            base=cfg.rope_base)) if cfg.position == "rope_mixed" else None)

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
        attend = bind_attention(self.config)
        out = attend(q, k, v, mask=mask, positions=positions,
                     freqs=None if self.rope_freqs is None else self.rope_freqs[...],
                     key=key, deterministic=deterministic)
        return self.output(out.reshape(b, t, e))


class FeedForward(nnx.Module):
    """The position-wise FFN ``act(x W1 + b1) W2 + b2`` with ``W1: [E, F]``."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        e, f = cfg.hidden_size, cfg.intermediate_size
        self.intermediate = dense(cfg, e, f, "ffn_in", rngs=rngs)
        self.output = dense(cfg, f, e, "ffn_out", rngs=rngs)
        self.act_name = cfg.hidden_act
        self.precision = cfg.matmul_precision

    def __call__(self, x: Float[Array, "B T E"]) -> Float[Array, "B T E"]:
        return F.feed_forward(
            x, self.intermediate.kernel[...], self.intermediate.bias[...],
            self.output.kernel[...], self.output.bias[...], act=F.activation(self.act_name),
            multipliers=(self.intermediate.multiplier, self.output.multiplier),
            precision=self.precision,
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
        self.attention_norm = norm(cfg, e) if cfg.norm != "none" else None
        self.ffn = FeedForward(cfg, rngs=rngs)
        self.ffn_norm = norm(cfg, e) if cfg.norm != "none" else None
        self.norm_position = cfg.norm
        self.dropout_rate = cfg.hidden_dropout
        self.residual_alpha = cfg.deepnorm_alpha_beta[0]
        # ReZero's α per sub-layer, 0 at init: learned (a Param) or ramped (a ResidualGate).
        gate = {"rezero": nnx.Param, "rezero_ramp": ResidualGate}.get(cfg.residual)
        zero = jnp.zeros((), jnp.dtype(cfg.param_dtype))
        self.attention_gate = None if gate is None else gate(zero)
        self.ffn_gate = None if gate is None else gate(jnp.copy(zero))

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
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, "pooler", rngs=rngs)

    def __call__(self, hidden: Float[Array, "B T E"]) -> Float[Array, "B E"]:
        return jnp.tanh(self.dense(hidden[:, 0, :]))


class Encoder(nnx.Module):
    """A BERT-family encoder: ``embed``, ``blocks[i]`` and ``pooler`` are public hooks."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = Embeddings(cfg, rngs=rngs)
        self.blocks = BlockStack([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)],
                                 scan=cfg.scan_layers, remat=cfg.remat)
        self.final_norm = norm(cfg, cfg.hidden_size) if cfg.norm == "pre" else None
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
          attention_mask: ``[B, T]``, 1 (or True) for real tokens, 0 for padding; or a full
            boolean mask ``[B|1, T, T]`` or ``[B|1, 1|H, T, T]``, True where query t may attend
            to key s (e.g. `jaxformer.unilm.unilm_mask`), which every block's attention kernel
            receives as it is.
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
        mask = None if attention_mask is None else block_mask(attention_mask)
        rope_positions = position_ids if self.config.position in ROTARY_POSITIONS else None
        h = self.embed(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                       deterministic=deterministic,
                       key=None if key is None else jax.random.fold_in(key, 0))
        h, hidden_states = self.blocks(h, mask=mask, deterministic=deterministic, key=key,
                                       positions=rope_positions)
        if self.final_norm is not None:
            h = self.final_norm(h)
        pooled = None if self.pooler is None else self.pooler(h)
        return EncoderOutput(h, hidden_states, pooled)

    def _has_dropout(self) -> bool:
        return self.config.hidden_dropout > 0 or self.config.attention_dropout > 0
