"""Cached greedy and beam-search decoding of a UniLM seq2seq `MaskedLM`.

Shape letters: B batch, K beams, N = B·K decoding rows, S source tokens (padded), T target
tokens (``max_length``), C = S + T cache slots, L layers, H heads, D head dim, E width,
V vocabulary.

A UniLM model (`jaxformer.tasks.seq2seq`) is one encoder under `jaxformer.unilm.unilm_mask`:
the source attends to itself only, and target token t to the source and to target tokens
0..t. So the source's hidden states never change while the target grows, and a new target
token's states depend on earlier tokens only through their keys and values (as in a decoder).
Decoding therefore runs the source once (`prefill`) and keeps every layer's keys and values in
fixed buffers ``[N, C, H, D]``: slots ``0..S-1`` hold the source, slot ``S + t`` target token t.
Each step (`extend`) embeds one new token (segment 1, position ``len(source) + t``), projects
its q, k, v with each block's own Dense layers, writes k and v into slot ``S + t`` and attends
over the C slots, masked to the real source plus the target so far: O(C) work per step
instead of a re-encode of O(C²). The blocks' sub-layer maths (norms, residuals, gates, FFN) is
the block's own (``Block._sublayer``), and the attention is the config's bound kernel
(`bind_attention`), so the cached step equals the full forward pass up to float rounding
(tested against a recompute at every step).

**Positions.** A padded source row of real length n puts target token t at position
``n + t``, as in the unpadded training row ``[CLS] source [SEP] target``. Supported:
``position="absolute"`` (BERT, the char BERT and WoBERT) and ``position="rope"`` with
``rope_axes=1`` and ``rotary_value=False`` (q and k are rotated by their own positions before
caching, so cached keys are already rotated). Other configs (``rope_mixed``, linear attention,
``causal=True``, 2D positions) raise a ValueError naming the field.

**Scores and length normalisation.** A hypothesis' length counts its tokens including the
closing [SEP] (``eos_id``); one that never emits [SEP] has length T. Its score is
``log P(y | x) / length ** alpha`` (``alpha = length_penalty``): 0 ranks by total
log-probability (favouring short outputs), 1 by the mean per-token log-probability. This is
the plain ``|Y|^α`` of HF's ``length_penalty`` and fairseq's ``lenpen``, not GNMT's
``((5 + |Y|) / 6)^α`` (Wu et al. 2016, arXiv:1609.08144, §7).

**Beam search.** Each step takes, for every row, the top K of the K·V continuations ranked by
score (alive beams: ``(log P + log p(v)) / (t + 1)^α``). A finished beam offers one
continuation only, itself, with its frozen log P, length and score, so it stays in the beam
while it ranks in the top K, padded with ``pad_id``. Beams are therefore always sorted by
score, and the search stops when every beam of every row has finished (or at T). The first
step starts from one live beam (the others at -inf), so the K beams are K distinct
continuations. Greedy decoding (``decode(..., greedy=True)``, the default for K = 1) is an
argmax per step and returns the same tokens as the search with one beam (tested).

**Compilation.** `decode` jits the pure ``_decode(graphdef, state, ids, mask, config)`` with
the graph definition and `DecodeConfig` static, so XLA compiles once per (B, S, T, K) shape
bucket and model structure; the loop over steps is one `lax.while_loop`.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Integer

from jaxformer.models.attention_kernels import bind_attention
from jaxformer.models.config import EncoderConfig
from jaxformer.rope import apply_rope


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How to decode (hashable: a static argument of the jitted search).

    Attributes:
      max_length: T, target tokens generated at most, the closing [SEP] included.
      eos_id: the end-of-sequence id ([SEP] in UniLM's layout).
      pad_id: written after a hypothesis' EOS.
      beam_size: K; 1 is greedy decoding.
      length_penalty: α of ``score = log P / length ** α`` (module doc).
      suppress_ids: ids never generated (e.g. [PAD], [CLS], [UNK], [MASK]): their logits are
        set to -inf before the log-softmax, so the scores are log-probabilities renormalised
        over the allowed ids (as HF's ``suppress_tokens``).
    """

    max_length: int
    eos_id: int
    pad_id: int = 0
    beam_size: int = 1
    length_penalty: float = 1.0
    suppress_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name, low in (("max_length", 1), ("eos_id", 0), ("pad_id", 0), ("beam_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"DecodeConfig.{name}: expected an int >= {low}, got {value!r}")
        alpha = self.length_penalty
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(
                alpha) or alpha < 0:
            raise ValueError(f"DecodeConfig.length_penalty: expected a finite float >= 0, got "
                             f"{alpha!r}")
        ids = self.suppress_ids
        if not isinstance(ids, tuple) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise ValueError(f"DecodeConfig.suppress_ids: expected a tuple of ints >= 0, got "
                             f"{ids!r}")
        if self.eos_id in ids:
            raise ValueError(f"DecodeConfig.suppress_ids: must not hold eos_id={self.eos_id}, "
                             f"got {ids!r}")


class DecodeCache(NamedTuple):
    """Per-layer keys and values of every decoding row, and where its source ends.

    Attributes:
      keys, values: L arrays ``[N, C, H, D]``; slot ``s < S`` is source token s, slot ``S + t``
        target token t (RoPE keys stored rotated).
      source_mask: ``[N, S]`` True on real source tokens.
      source_length: ``[N]`` real source tokens (the position of target token 0).
    """

    keys: tuple[Array, ...]
    values: tuple[Array, ...]
    source_mask: Bool[Array, "N S"]
    source_length: Integer[Array, " N"]


class DecodeOutput(NamedTuple):
    """Decoded hypotheses, best first.

    Attributes:
      tokens: ``[B, K, T]`` ids: each hypothesis, its closing ``eos_id`` included, then
        ``pad_id``.
      scores: ``[B, K]`` ``log_prob / length ** α``, sorted descending along K.
      log_probs: ``[B, K]`` ``log P(tokens | source)`` summed over the hypothesis' tokens.
      lengths: ``[B, K]`` tokens of each hypothesis (EOS included; T if it never ended).
      finished: ``[B, K]`` True where the hypothesis emitted ``eos_id``.
    """

    tokens: Integer[Array, "B K T"]
    scores: Float[Array, "B K"]
    log_probs: Float[Array, "B K"]
    lengths: Integer[Array, "B K"]
    finished: Bool[Array, "B K"]


def check_decodable(cfg: EncoderConfig) -> None:
    """Raise a ValueError naming the field when the cached decoder cannot run `cfg`."""
    problems = []
    if cfg.attention != "softmax":
        problems.append(f"attention={cfg.attention!r} (expected 'softmax')")
    if cfg.causal:
        problems.append("causal=True (expected False: the UniLM mask supplies the causality)")
    if cfg.position not in ("absolute", "rope"):
        problems.append(f"position={cfg.position!r} (expected 'absolute' or 'rope')")
    if cfg.position == "rope" and (cfg.rope_axes != 1 or cfg.rotary_value):
        problems.append(f"rope_axes={cfg.rope_axes}, rotary_value={cfg.rotary_value} (expected "
                        "1 and False)")
    if cfg.type_vocab_size < 2:
        problems.append(f"type_vocab_size={cfg.type_vocab_size} (expected >= 2: segment 1 "
                        "marks the target)")
    if problems:
        raise ValueError("EncoderConfig not supported by the cached UniLM decoder: "
                         + "; ".join(problems))


def _attention_kernel(cfg: EncoderConfig) -> Any:
    """The config's bound kernel, minus RoPE: the decoder rotates q and k itself, each by its
    own positions, because cached keys and the new query sit at different positions (the bound
    kernel rotates q and k by one shared position array)."""
    if cfg.position == "rope":
        cfg = dataclasses.replace(cfg, position="absolute")
    return bind_attention(cfg)


def _run_blocks(model: Any, h: Float[Array, "N t E"], cache: DecodeCache, *, start: Any,
                positions: Integer[Array, "N t"], mask: Bool[Array, "N 1 t C"]
                ) -> tuple[Float[Array, "N t E"], DecodeCache]:
    """Run t new tokens, to be stored at slots ``start .. start + t - 1``, through every block;
    returns their last hidden states and the updated cache."""
    encoder = model.encoder
    cfg = encoder.config
    kernel = _attention_kernel(cfg)
    rotate = None
    if cfg.position == "rope":
        def rotate(x: Array) -> Array:
            return apply_rope(x, positions, layout=cfg.rope_layout, base=cfg.rope_base)
    keys, values = list(cache.keys), list(cache.values)
    for i, block in enumerate(encoder.blocks):
        att = block.attention

        def attend(y: Array, i: int = i, att: Any = att) -> Array:
            n, t, e = y.shape
            heads = lambda z: z.reshape(n, t, att.num_heads, e // att.num_heads)  # noqa: E731
            q, k, v = heads(att.query(y)), heads(att.key(y)), heads(att.value(y))
            if rotate is not None:
                q, k = rotate(q), rotate(k)
            keys[i] = jax.lax.dynamic_update_slice_in_dim(keys[i], k.astype(keys[i].dtype),
                                                          start, axis=1)
            values[i] = jax.lax.dynamic_update_slice_in_dim(values[i], v.astype(values[i].dtype),
                                                            start, axis=1)
            out = kernel(q, keys[i], values[i], mask=mask, positions=None, freqs=None, key=None,
                         deterministic=True)
            return att.output(out.reshape(n, t, e))

        # The block's own residual / norm / gate arrangement (post-, pre- or no norm, DeepNorm,
        # ReZero); dropout is off in decoding.
        h = block._sublayer(h, attend, block.attention_norm, block.attention_gate, _identity)
        h = block._sublayer(h, block.ffn, block.ffn_norm, block.ffn_gate, _identity)
    if encoder.final_norm is not None:
        h = encoder.final_norm(h)
    return h, cache._replace(keys=tuple(keys), values=tuple(values))


def _identity(x: Array) -> Array:
    return x


def prefill(model: Any, input_ids: Integer[Array, "B S"], attention_mask: Array, *,
            max_length: int) -> tuple[Float[Array, "B V"], DecodeCache]:
    """Encode the sources once: the logits of target token 0 (read at each row's last real
    source token, its [SEP]) and a cache with ``C = S + max_length`` slots.

    Args:
      model: a `MaskedLM` (encoder + tied head) whose config passes `check_decodable`.
      input_ids: ``[B, S]`` ``[CLS] source [SEP]``, right-padded.
      attention_mask: ``[B, S]`` 1 on real tokens (each row starts with >= 1 real token).
      max_length: T, the target slots to reserve.
    """
    cfg = model.encoder.config
    check_decodable(cfg)
    b, s = input_ids.shape
    if attention_mask.shape != (b, s):
        raise ValueError(f"attention_mask: expected shape [B, S] = {(b, s)} like input_ids, got "
                         f"{tuple(attention_mask.shape)}")
    if cfg.position == "absolute" and s + max_length > cfg.max_position_embeddings:
        raise ValueError(f"S + max_length = {s} + {max_length} exceeds max_position_embeddings="
                         f"{cfg.max_position_embeddings}; shorten the source or max_length")
    real = attention_mask != 0
    length = jnp.sum(real, axis=1, dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32)[None], (b, s))
    slots = s + max_length
    shape = (b, slots, cfg.num_heads, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.num_layers))
    cache = DecodeCache(zeros, tuple(jnp.zeros_like(z) for z in zeros), real, length)
    h = model.encoder.embed(input_ids, token_type_ids=jnp.zeros_like(input_ids),
                            position_ids=positions, deterministic=True)
    # Every source query sees the real source keys (padding queries too: their outputs are
    # never read, and the row is never empty); target slots are still empty.
    keys_visible = jnp.concatenate([real, jnp.zeros((b, max_length), jnp.bool_)], axis=1)
    h, cache = _run_blocks(model, h, cache, start=0, positions=positions,
                           mask=jnp.broadcast_to(keys_visible[:, None, None], (b, 1, s, slots)))
    last = jnp.take_along_axis(h, (length - 1)[:, None, None], axis=1)  # [B, 1, E]
    return model.head(last, model.encoder)[:, 0], cache


def extend(model: Any, cache: DecodeCache, tokens: Integer[Array, " N"], step: Any
           ) -> tuple[Float[Array, "N V"], DecodeCache]:
    """Feed target token ``step`` (``tokens``, one per row) and return the logits of token
    ``step + 1`` and the cache with its keys and values in slot ``S + step``."""
    n, s = cache.source_mask.shape
    slots = cache.keys[0].shape[1]
    positions = (cache.source_length + step)[:, None]  # [N, 1]
    h = model.encoder.embed(tokens[:, None], token_type_ids=jnp.ones_like(tokens)[:, None],
                            position_ids=positions, deterministic=True)
    slot = jnp.arange(slots - s, dtype=jnp.int32)
    target_visible = jnp.broadcast_to((slot <= step)[None], (n, slots - s))
    keys_visible = jnp.concatenate([cache.source_mask, target_visible], axis=1)  # [N, C]
    h, cache = _run_blocks(model, h, cache, start=s + step, positions=positions,
                           mask=keys_visible[:, None, None, :])
    return model.head(h, model.encoder)[:, 0], cache


def repeat_cache(cache: DecodeCache, k: int) -> DecodeCache:
    """Each row repeated K times (row ``b * K + j`` is beam j of source b)."""
    return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), cache)


def _log_softmax(logits: Array, suppress_ids: tuple[int, ...]) -> Array:
    z = logits.astype(jnp.float32)
    if suppress_ids:
        z = z.at[..., jnp.asarray(suppress_ids, jnp.int32)].set(-jnp.inf)
    return jax.nn.log_softmax(z, axis=-1)


def _normalise(log_prob: Array, length: Array, alpha: float) -> Array:
    if alpha == 0:
        return log_prob
    return log_prob / jnp.maximum(length, 1).astype(jnp.float32) ** jnp.float32(alpha)


def _beam_search(model: Any, input_ids: Array, attention_mask: Array, config: DecodeConfig
                 ) -> DecodeOutput:
    b = input_ids.shape[0]
    k, t_max, alpha = config.beam_size, config.max_length, config.length_penalty
    logits, cache = prefill(model, input_ids, attention_mask, max_length=t_max)
    v = logits.shape[-1]
    cache = repeat_cache(cache, k)
    logits = jnp.repeat(logits, k, axis=0)  # [N, V]
    # One live beam at the start, so the first step's K picks are K distinct tokens.
    log_prob = jnp.where(jnp.arange(k)[None] == 0, 0.0, -jnp.inf) * jnp.ones((b, 1))
    carry = (jnp.int32(0), jnp.full((b, k, t_max), config.pad_id, jnp.int32), cache, logits,
             jnp.zeros((b, k), jnp.bool_), log_prob.astype(jnp.float32),
             jnp.zeros((b, k), jnp.int32))
    stay = jnp.arange(v) == 0  # the one continuation a finished beam offers (itself)
    rows = (jnp.arange(b) * k)[:, None]  # [B, 1]

    def cond(carry: tuple) -> Array:
        t, _, _, _, finished, log_prob, _ = carry
        # A beam at -inf (never filled: K > candidates) counts as done.
        return (t < t_max) & ~jnp.all(finished | jnp.isneginf(log_prob))

    def body(carry: tuple) -> tuple:
        t, tokens, cache, logits, finished, log_prob, length = carry
        logp = _log_softmax(logits, config.suppress_ids).reshape(b, k, v)
        cand = log_prob[..., None] + logp  # [B, K, V]
        # A finished beam's one continuation is itself (at index 0); its other K·V slots are
        # -inf, and a -inf pick (only when fewer than K candidates are finite) stays -inf.
        frozen = finished[..., None] & stay[None, None]
        raw = jnp.where(finished[..., None], jnp.where(frozen, log_prob[..., None], -jnp.inf),
                        cand).reshape(b, k * v)
        ranked = jnp.where(frozen, _normalise(log_prob, length, alpha)[..., None],
                           _normalise(cand, t + 1, alpha))
        ranked = jnp.where(finished[..., None] & ~frozen, -jnp.inf, ranked).reshape(b, k * v)
        _, best = jax.lax.top_k(ranked, k)  # [B, K], sorted by score
        parent, token = best // v, (best % v).astype(jnp.int32)
        was_done = jnp.take_along_axis(finished, parent, axis=1)
        token = jnp.where(was_done, config.pad_id, token)
        log_prob = jnp.take_along_axis(raw, best, axis=1)
        length = jnp.where(was_done, jnp.take_along_axis(length, parent, axis=1), t + 1)
        finished = was_done | (token == config.eos_id)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[..., None], t, axis=2)
        flat = (rows + parent).reshape(-1)  # [N]: the parent row of each new beam
        cache = jax.tree.map(lambda x: jnp.take(x, flat, axis=0), cache)
        logits, cache = extend(model, cache, token.reshape(-1), t)
        return t + 1, tokens, cache, logits, finished, log_prob, length

    _, tokens, _, _, finished, log_prob, length = jax.lax.while_loop(cond, body, carry)
    # Beams that never finished end at T tokens (length then equals T already).
    return DecodeOutput(tokens, _normalise(log_prob, length, alpha), log_prob, length, finished)


def _greedy(model: Any, input_ids: Array, attention_mask: Array, config: DecodeConfig
            ) -> DecodeOutput:
    b = input_ids.shape[0]
    t_max = config.max_length
    logits, cache = prefill(model, input_ids, attention_mask, max_length=t_max)
    carry = (jnp.int32(0), jnp.full((b, t_max), config.pad_id, jnp.int32), cache, logits,
             jnp.zeros((b,), jnp.bool_), jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32))

    def cond(carry: tuple) -> Array:
        t, _, _, _, finished, _, _ = carry
        return (t < t_max) & ~jnp.all(finished)

    def body(carry: tuple) -> tuple:
        t, tokens, cache, logits, finished, log_prob, length = carry
        logp = _log_softmax(logits, config.suppress_ids)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        picked = jnp.take_along_axis(logp, token[:, None], axis=1)[:, 0]
        log_prob = log_prob + jnp.where(finished, 0.0, picked)
        length = length + (~finished).astype(jnp.int32)
        token = jnp.where(finished, config.pad_id, token)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], t, axis=1)
        finished = finished | (token == config.eos_id)
        logits, cache = extend(model, cache, token, t)
        return t + 1, tokens, cache, logits, finished, log_prob, length

    _, tokens, _, _, finished, log_prob, length = jax.lax.while_loop(cond, body, carry)
    score = _normalise(log_prob, length, config.length_penalty)
    return DecodeOutput(tokens[:, None], score[:, None], log_prob[:, None], length[:, None],
                        finished[:, None])


def _decode(graphdef: Any, state: Any, input_ids: Array, attention_mask: Array, *,
            config: DecodeConfig, greedy: bool) -> DecodeOutput:
    """The pure, jitted search over the split model."""
    model = nnx.merge(graphdef, state)
    search = _greedy if greedy else _beam_search
    return search(model, input_ids, attention_mask, config)


decode_jit = jax.jit(_decode, static_argnames=("graphdef", "config", "greedy"))


def decode(model: Any, input_ids: Array | np.ndarray,
           attention_mask: Array | np.ndarray | None = None, *,
           config: DecodeConfig, greedy: bool | None = None) -> DecodeOutput:
    """Generate targets for ``[CLS] source [SEP]`` rows with a UniLM `MaskedLM` (module doc).

    Args:
      model: a `MaskedLM` (split here, so the jitted search is pure over its state).
      input_ids: ``[B, S]`` int sources ``[CLS] source [SEP]``, right-padded (jax or numpy;
        annotated plainly so that the checks below name the argument).
      attention_mask: ``[B, S]`` 1 on real tokens; all ones when omitted.
      config: `DecodeConfig` (T, K, α, EOS and padding ids).
      greedy: argmax decoding (default: ``beam_size == 1``); ``False`` with K = 1 runs the beam
        search with one beam, which returns the same tokens.

    Returns:
      A `DecodeOutput` with K = ``beam_size`` (1 for greedy).
    """
    if not isinstance(config, DecodeConfig):
        raise TypeError(f"config: expected a DecodeConfig, got {type(config).__name__}")
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise ValueError(f"input_ids: expected an int array [B, S], got {input_ids.dtype} "
                         f"shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    attention_mask = jnp.asarray(attention_mask)
    vocab = model.encoder.config.vocab_size
    for name, value in (("eos_id", config.eos_id), ("pad_id", config.pad_id),
                        ("suppress_ids", max(config.suppress_ids, default=0))):
        if value >= vocab:
            raise ValueError(f"config.{name}: expected ids < vocab_size={vocab}, got "
                             f"{getattr(config, name)}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask: expected shape [B, S] = {tuple(input_ids.shape)} like "
                         f"input_ids, got {tuple(attention_mask.shape)}")
    if not isinstance(attention_mask, jax.core.Tracer):
        real = np.asarray(attention_mask) != 0
        # Right padding: each row's real tokens come first (target positions follow them).
        if not (real[:, :1].all() and (real[:, 1:] <= real[:, :-1]).all()):
            raise ValueError("attention_mask: expected right-padded rows (1...1 0...0, at least "
                             "one real token each), got another pattern")
    if greedy is None:
        greedy = config.beam_size == 1
    if greedy and config.beam_size != 1:
        raise ValueError(f"greedy=True needs config.beam_size=1, got {config.beam_size}")
    graphdef, state = nnx.split(model)
    return decode_jit(graphdef, state, input_ids.astype(jnp.int32), attention_mask,
                      config=config, greedy=bool(greedy))
