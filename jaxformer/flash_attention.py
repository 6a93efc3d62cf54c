"""Fused softmax attention (FlashAttention-2) as Pallas kernels, with the kit's attention dropout.

Shape letters as in `jaxformer.attention`: B batch, T query tokens, S key tokens, H heads, D head
dim (q and k), K value head dim. Inputs and output use the encoder's ``[B, T, H, D]`` layout.

:func:`flash_attention` computes exactly what `jaxformer.attention.softmax_attention` computes
(same masking semantics, same dropout mask for the same key) without materialising the
``[B, H, T, S]`` scores: each program owns ``block_q`` query rows of one (batch, head) and walks
the keys in blocks of ``block_k``, keeping a running row maximum ``m``, row sum ``l`` and
unnormalised output ``acc`` (the online softmax of FlashAttention, Dao et al. 2022, Alg. 1, in
the loop order of FlashAttention-2, Dao 2023, Alg. 1)::

    m' = max(m, rowmax(s_j)),   l' = e^(m - m') l + rowsum(e^(s_j - m')),
    acc' = e^(m - m') acc + drop(e^(s_j - m')) v_j,   out = acc / l.

Dropout acts on the normalised probabilities, as in BERT; being an elementwise scaling it
commutes with the per-row division, so ``l`` is the *undropped* row sum (as in `_attend`). A
weight at ``(b, h, t, s)`` is kept iff ``hash_index(key, ((b H + h) T + t) S + s) >=
keep_threshold(rate)`` (`jaxformer.random_bits`): the kernels recompute that counter hash from
the key's uint32 words, so the forward and both backward kernels draw the mask of the XLA path
without storing it.

Backward (Dao 2023, Alg. 2, with dropout as in Dao et al. 2022, Alg. 4). With ``P`` the
undropped probabilities, ``Z`` the keep mask and ``r = 1 / (1 - rate)``::

    dV = (r Z∘P)ᵀ dO,   dP = r Z∘(dO Vᵀ),   dS = P∘(dP - D),   D_i = rowsum(dO_i∘O_i),
    dQ = scale · dS K,   dK = scale · dSᵀ Q,

``D_i = Σ_j P_ij dP_ij`` because ``O_i = Σ_j r Z_ij P_ij V_j``. ``P`` is recomputed as
``e^(s - m) / l`` from ``m`` and ``l`` saved apart, not as ``m + log l``: a fully masked row has
``m = finfo(float32).min``, to which ``log l`` adds nothing in fp32. One kernel accumulates dK, dV
over query blocks, another dQ over key blocks, so no program writes another's output.

Kernels run through Pallas' Triton lowering on GPU and Pallas' interpreter elsewhere
(``interpret=None``), so the CPU tests execute the same kernel code.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxformer.functional import attention_scale
from jaxformer.random_bits import key_words, check_size, fmix32, keep_threshold

try:  # Pallas' Triton backend: deprecated in JAX 0.11, may be removed later.
    from jax.experimental.pallas import triton as _pl_triton
except ImportError:  # pragma: no cover
    _pl_triton = None

# A block dimension squeezed out of the kernel's view: `pl.squeezed` where it exists; `None`
# meant the same in every JAX version that has no `pl.squeezed`.
_SQUEEZED = getattr(pl, "squeezed", None)

DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16), jnp.dtype(jnp.float32))
GPU_HEAD_DIMS = (32, 64, 128)
_NEG = float(np.finfo(np.float32).min)  # masked score, as `softmax_attention`


# --- options ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static options of one call (hashable: the custom_vjp's non-differentiable argument)."""

    heads: int
    q_len: int  # T and S before padding
    k_len: int
    scale: float
    causal: bool
    skip_causal: bool  # skip key blocks above the diagonal (see `flash_attention`)
    has_mask: bool
    dropout: bool
    rate: float
    threshold: int  # keep iff hash >= threshold
    fwd_blocks: tuple[int, int]  # (block_q, block_k)
    bwd_blocks: tuple[int, int]
    num_warps: int
    num_stages: int
    interpret: bool


def default_blocks(head_dim: int, q_len: int, k_len: int) -> dict[str, tuple[int, int]]:
    """Default ``(block_q, block_k)`` of the forward (``"fwd"``) and backward (``"bwd"``) kernels.

    Powers of two >= 16 (Triton's `tl.dot` needs >= 16 rows and columns). The forward keeps an
    fp32 ``[block_q, K]`` accumulator per program, the dK/dV kernel two ``[block_k, D]`` ones,
    so the blocks shrink as the head dim grows. Never above the sequence rounded up to a power
    of two, so short sequences are not padded to a large block.
    """
    fwd = (128, 64) if head_dim <= 64 else (64, 64)
    bwd = (64, 64) if head_dim <= 64 else (32, 64)
    tq, tk = (max(16, pl.next_power_of_2(n)) for n in (q_len, k_len))
    return {"fwd": (min(fwd[0], tq), min(fwd[1], tk)), "bwd": (min(bwd[0], tq), min(bwd[1], tk))}


def flash_attention_supported(q_shape: tuple[int, ...], dtype: object, backend: str
                              ) -> tuple[bool, str]:
    """Whether `flash_attention` should be used for queries of `q_shape` ``[B, T, H, D]`` and
    `dtype` on `backend` (``jax.default_backend()``), and if not, why.

    GPU only: elsewhere the kernels run in Pallas' interpreter, which is for tests, not speed.
    D must be one of `GPU_HEAD_DIMS` (Triton blocks are powers of two), the dtype one of
    `DTYPES`, and ``[B, H, T, T]`` must fit the uint32 dropout counter.
    """
    if backend not in ("gpu", "cuda"):
        return False, f"backend {backend!r} is not a CUDA GPU; flash_attention runs on GPU only"
    if len(q_shape) != 4:
        return False, f"q must have rank 4 [B, T, H, D], got shape {tuple(q_shape)}"
    batch, q_len, heads, head_dim = (int(n) for n in q_shape)
    if head_dim not in GPU_HEAD_DIMS:
        return False, f"head dim D={head_dim} is not one of {GPU_HEAD_DIMS}"
    if jnp.dtype(dtype) not in DTYPES:
        return False, f"dtype {jnp.dtype(dtype)} is not one of {[str(d) for d in DTYPES]}"
    if batch * heads * q_len * q_len > 1 << 32:
        return False, f"B*H*T*T = {batch * heads * q_len * q_len} exceeds the 2^32 dropout counter"
    return True, ""


def _triton_params(num_warps: int, num_stages: int) -> object:
    """Triton compiler params. Passing them explicitly also selects the Triton backend of
    `pallas_call` rather than Mosaic GPU. The class is `CompilerParams` since JAX 0.7 (still in
    0.11, where the Triton backend is deprecated) and was `TritonCompilerParams` before."""
    if _pl_triton is None:
        raise RuntimeError(f"flash_attention needs jax.experimental.pallas.triton, which JAX "
                           f"{jax.__version__} lacks; pass interpret=True or use the XLA path")
    cls = getattr(_pl_triton, "CompilerParams", None) or getattr(_pl_triton, "TritonCompilerParams")
    return cls(num_warps=num_warps, num_stages=num_stages)


def _is_block(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 16 and n & (n - 1) == 0


# --- public entry point -----------------------------------------------------------------------


def flash_attention(
    q: Float[Array, "B T H D"],
    k: Float[Array, "B S H D"],
    v: Float[Array, "B S H K"],
    *,
    key_mask: Bool[Array, "B S"] | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    key: PRNGKeyArray | None = None,
    deterministic: bool = True,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
) -> Float[Array, "B T H K"]:
    """Softmax attention ``softmax(scale q kᵀ) v`` as fused Pallas kernels; equals
    ``softmax_attention(q, k, v, mask=key_mask[:, None, None, :] (& tril if causal), ...)``.

    `key_mask` ``[B, S]``: True = may attend (padding). `causal`: query t attends to keys
    ``s <= t`` (``jnp.tril`` of ``[T, S]``). Masked scores are ``finfo(float32).min``, so a fully
    masked row averages every value uniformly, as in the XLA path. Dropout (``dropout_rate`` in
    ``[0, 1)``; `key` needed when ``deterministic=False``) draws the XLA path's mask. `scale`:
    None is ``1/sqrt(D)``. Output in v's dtype; gradients flow to q, k and v.

    `block_q` / `block_k` (powers of two >= 16) set the blocks of all three kernels; None takes
    `default_blocks`. T and S need not be multiples of them: q is padded with zero rows (their
    outputs are dropped) and k, v with keys that get exactly zero weight. `interpret`: None runs
    Pallas' interpreter unless the default backend is a GPU.

    Causal attention skips the key blocks above the diagonal only without `key_mask`: with a
    key mask a query may have all its past keys masked, and such a row averages *all* S values.
    """
    plan, words = _plan(q, k, v, key_mask, causal=causal, scale=scale, dropout_rate=dropout_rate,
                        key=key, deterministic=deterministic, block_q=block_q, block_k=block_k,
                        interpret=interpret)
    q_len, k_len = q.shape[1], k.shape[1]
    t_pad = -q_len % max(plan.fwd_blocks[0], plan.bwd_blocks[0])
    s_pad = -k_len % max(plan.fwd_blocks[1], plan.bwd_blocks[1])
    pad = lambda a, n: a if n == 0 else jnp.pad(a, ((0, 0), (0, n), (0, 0), (0, 0)))  # noqa: E731
    # The key mask travels as int32: Triton handles i1 tensors in memory poorly.
    mask = None if key_mask is None else jnp.pad(key_mask.astype(jnp.int32), ((0, 0), (0, s_pad)))
    out = _flash(pad(q, t_pad), pad(k, s_pad), pad(v, s_pad), mask, words, plan)
    return out[:, :q_len] if t_pad else out


def _plan(q: Array, k: Array, v: Array, key_mask: Array | None, *, causal: bool,
          scale: float | None, dropout_rate: float, key: Array | None, deterministic: bool,
          block_q: int | None, block_k: int | None, interpret: bool | None
          ) -> tuple[_Plan, Array | None]:
    """Validate the inputs (errors name the argument, the expected and the actual value), fix
    the static options, and return them with the dropout key's uint32 words (or None)."""
    if q.ndim != 4:
        raise ValueError(f"q must have rank 4 [B, T, H, D], got shape {tuple(q.shape)}")
    batch, q_len, heads, head_dim = q.shape
    if k.ndim != 4 or (k.shape[0], k.shape[2], k.shape[3]) != (batch, heads, head_dim):
        raise ValueError(f"k has shape {tuple(k.shape)}; expected [B={batch}, S, H={heads}, "
                         f"D={head_dim}]")
    k_len, v_dim = k.shape[1], v.shape[-1]
    if v.ndim != 4 or v.shape[:3] != (batch, k_len, heads):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected [B={batch}, S={k_len}, "
                         f"H={heads}, K]")
    if q.dtype not in DTYPES or not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share one dtype of {[str(d) for d in DTYPES]}, got "
                        f"q.dtype={q.dtype}, k.dtype={k.dtype}, v.dtype={v.dtype}")
    if key_mask is not None and (key_mask.shape != (batch, k_len) or key_mask.dtype != jnp.bool_):
        raise ValueError(f"key_mask must be a bool [B, S] = ({batch}, {k_len}) array, got "
                         f"{key_mask.dtype} of shape {tuple(key_mask.shape)}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    dropping = not deterministic and dropout_rate > 0.0
    words = None
    if dropping:
        if key is None:
            raise ValueError("dropout_rate > 0 with deterministic=False needs key=, got None")
        check_size((batch, heads, q_len, k_len))  # the dropout counter indexes [B, H, T, S]
        words = jnp.stack(key_words(key))
    for name, n in (("block_q", block_q), ("block_k", block_k)):
        if n is not None and not _is_block(n):
            raise ValueError(f"{name} must be a power of two >= 16 (Triton's tl.dot), got {n!r}")
    interpret = jax.default_backend() != "gpu" if interpret is None else bool(interpret)
    if not interpret and not (_is_block(head_dim) and _is_block(v_dim)):
        raise ValueError(f"on GPU the head dims must be powers of two >= 16 (Triton blocks), got "
                         f"D={head_dim}, K={v_dim}")
    blocks = default_blocks(head_dim, q_len, k_len)
    big = max(head_dim, v_dim) > 64
    plan = _Plan(
        heads=heads, q_len=q_len, k_len=k_len,
        scale=float(attention_scale(head_dim) if scale is None else scale),
        causal=bool(causal), skip_causal=bool(causal) and key_mask is None,
        has_mask=key_mask is not None, dropout=dropping,
        rate=float(dropout_rate) if dropping else 0.0,
        threshold=int(keep_threshold(dropout_rate)) if dropping else 0,
        fwd_blocks=(block_q or blocks["fwd"][0], block_k or blocks["fwd"][1]),
        bwd_blocks=(block_q or blocks["bwd"][0], block_k or blocks["bwd"][1]),
        num_warps=8 if big else 4, num_stages=2, interpret=interpret,
    )
    return plan, words


# --- the custom vjp ---------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q: Array, k: Array, v: Array, mask: Array | None, words: Array | None,
           plan: _Plan) -> Array:
    return _forward(q, k, v, mask, words, plan)[0]


def _flash_fwd(q, k, v, mask, words, plan):
    out, m, l = _forward(q, k, v, mask, words, plan)
    return out, (q, k, v, mask, words, out, m, l)


def _flash_bwd(plan, res, dout):
    q, k, v, mask, words, out, m, l = res
    batch, t_len, heads, _ = q.shape
    # D_i = rowsum(dO_i * O_i) (Dao 2023, Alg. 2 line 4) and 1 / l: [B*H, T] fp32, small XLA ops.
    delta = jnp.einsum("BTHK,BTHK->BHT", dout.astype(jnp.float32), out.astype(jnp.float32))
    stats = (m, jnp.float32(1) / l, delta.reshape(batch * heads, t_len))
    dq = _backward_dq(q, k, v, dout, stats, mask, words, plan)
    dk, dv = _backward_dkdv(q, k, v, dout, stats, mask, words, plan)
    return dq, dk, dv, None, None  # no gradient to the mask or the key


_flash.defvjp(_flash_fwd, _flash_bwd)


# --- pieces shared by the kernels --------------------------------------------------------------


def _heads_spec(heads: int, block: int, width: int, blocked: bool) -> pl.BlockSpec:
    """BlockSpec of a ``[B, N, H, W]`` array on the grid ``(B*H, n)``: rows ``i*block ...``
    (`blocked`) or all N rows (``block = N``) of head ``bh % H``. Picking the head in the index
    map reads the [B, T, H, D] layout in place, with no transpose through HBM."""
    index = lambda bh, i: (lax.div(bh, heads), i if blocked else 0, lax.rem(bh, heads), 0)  # noqa: E731
    return pl.BlockSpec((_SQUEEZED, block, _SQUEEZED, width), index)


def _rows_spec(block: int, blocked: bool, heads: int = 1) -> pl.BlockSpec:
    """BlockSpec of a ``[B*H, N]`` statistic (m, 1/l, D), or with ``heads=H`` of the ``[B, S]``
    key mask, on the grid ``(B*H, n)``."""
    return pl.BlockSpec((_SQUEEZED, block), lambda bh, i: (lax.div(bh, heads), i if blocked else 0))


def _call(kernel, args: list, specs: list, mask: Array | None, words: Array | None, *,
          mask_spec: pl.BlockSpec, grid: tuple, out_specs, out_shape, plan: _Plan, name: str):
    """`pallas_call` with the optional mask and key-word inputs appended to `args`."""
    for extra, spec in ((mask, mask_spec), (words, None)):
        if extra is not None:
            args = [*args, extra]
            specs = [*specs, spec or pl.BlockSpec(extra.shape, lambda bh, i: (0,))]
    params = None if plan.interpret else _triton_params(plan.num_warps, plan.num_stages)
    return pl.pallas_call(kernel, grid=grid, in_specs=specs, out_specs=out_specs,
                          out_shape=out_shape, interpret=plan.interpret, compiler_params=params,
                          name=name)(*args)


def _split_refs(refs: tuple, plan: _Plan, n_in: int) -> tuple[list, object, list | None, list]:
    """(inputs, mask ref or None, key words (read once per program) or None, outputs)."""
    ins, rest = list(refs[:n_in]), list(refs[n_in:])
    mask_ref = rest.pop(0) if plan.has_mask else None
    words = None
    if plan.dropout:
        words_ref = rest.pop(0)
        words = [words_ref[w] for w in range(words_ref.shape[0])]
    return ins, mask_ref, words, rest


def _tile(qb: Array, kb: Array, bh: Array, start_q: Array, start_k: Array, key_ok: Array | None,
          s_len: int, words: list | None, plan: _Plan) -> tuple[Array, Array | None, Array | None,
                                                                 Array | None]:
    """One ``[bq, bk]`` tile: masked scores ``scale q kᵀ`` (fp32), which scores the mask lets
    through (None: all), which keys exist (None: S not padded), and the dropout keep mask.

    Pad keys get exactly zero weight even in a fully masked row (where masked real keys get
    ``exp(0)``), so callers zero them after the exponential."""
    bq, bk = qb.shape[0], kb.shape[0]
    rows = start_q + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)  # absolute positions
    cols = start_k + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
    s = lax.dot_general(qb, kb, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    s = s * jnp.float32(plan.scale)
    ok = key_ok
    if plan.causal:
        ok = cols <= rows if ok is None else ok & (cols <= rows)
    real = None if s_len == plan.k_len else cols < plan.k_len
    through = ok if real is None else (real if ok is None else ok & real)
    if through is not None:
        s = jnp.where(through, s, jnp.float32(_NEG))
    keep = None
    if words is not None:
        # hash_index(key, ((b H + h) T + t) S + s) >= threshold; uint32 wraps as in XLA.
        u32 = jnp.uint32
        index = (bh.astype(u32) * u32(plan.q_len) + rows.astype(u32)) * u32(plan.k_len)
        h = fmix32((index + cols.astype(u32)) ^ words[0])
        for w in words[1:]:
            h = fmix32(h + w)
        keep = h >= u32(plan.threshold)
    return s, through, real, keep


def _zero_unless(cond: Array | None, x: Array) -> Array:  # cond None: all true
    return x if cond is None else jnp.where(cond, x, jnp.float32(0))


def _dot(a: Array, b: Array, contract: tuple[int, int]) -> Array:
    """2D matmul over ``a``'s axis ``contract[0]`` and ``b``'s ``contract[1]``, fp32 sums."""
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                           preferred_element_type=jnp.float32)


def _key_blocks(i: Array, bq: int, bk: int, n_k: int, plan: _Plan) -> Array | int:
    """Key blocks that query block `i` visits: all, or causally those up to its last row."""
    return jnp.minimum(n_k, lax.div((i + 1) * bq + (bk - 1), bk)) if plan.skip_causal else n_k


# --- forward ----------------------------------------------------------------------------------


def _forward(q: Array, k: Array, v: Array, mask: Array | None, words: Array | None,
             plan: _Plan) -> tuple[Array, Array, Array]:
    """Output [B, T, H, K] and the row statistics m, l [B*H, T] (fp32) of padded inputs."""
    batch, t_len, heads, head_dim = q.shape
    s_len, v_dim = k.shape[1], v.shape[3]
    bq, bk = plan.fwd_blocks

    def kernel(*refs):
        (q_ref, k_ref, v_ref), mask_ref, key_words, (o_ref, m_ref, l_ref) = _split_refs(
            refs, plan, 3)
        bh, i = pl.program_id(0), pl.program_id(1)
        qb = q_ref[...]

        def body(j, carry):
            acc, m, l = carry
            start = pl.multiple_of(j * bk, bk)
            vb = v_ref[pl.ds(start, bk), :]
            key_ok = None if mask_ref is None else (mask_ref[pl.ds(start, bk)] != 0)[None, :]
            s, _, real, keep = _tile(qb, k_ref[pl.ds(start, bk), :], bh, i * bq, start, key_ok,
                                     s_len, key_words, plan)
            m_new = jnp.maximum(m, jnp.max(s, axis=1))
            alpha = jnp.exp(m - m_new)  # 0 on the first block (m = -inf)
            p = _zero_unless(real, jnp.exp(s - m_new[:, None]))
            l = alpha * l + jnp.sum(p, axis=1)  # undropped; 1/(1-rate) is applied at the end
            pv = _dot(_zero_unless(keep, p).astype(vb.dtype), vb, (1, 0))
            return alpha[:, None] * acc + pv, m_new, l

        init = (jnp.zeros((bq, v_dim), jnp.float32), jnp.full((bq,), -jnp.inf, jnp.float32),
                jnp.zeros((bq,), jnp.float32))
        acc, m, l = lax.fori_loop(0, _key_blocks(i, bq, bk, s_len // bk, plan), body, init)
        norm = l * jnp.float32(1.0 - plan.rate) if plan.dropout else l
        o_ref[...] = (acc / norm[:, None]).astype(o_ref.dtype)
        m_ref[...] = m
        l_ref[...] = l

    stat = jax.ShapeDtypeStruct((batch * heads, t_len), jnp.float32)
    return _call(
        kernel, [q, k, v], [_heads_spec(heads, bq, head_dim, True),
                            _heads_spec(heads, s_len, head_dim, False),
                            _heads_spec(heads, s_len, v_dim, False)],
        mask, words, mask_spec=_rows_spec(s_len, False, heads), grid=(batch * heads, t_len // bq),
        out_specs=[_heads_spec(heads, bq, v_dim, True), _rows_spec(bq, True), _rows_spec(bq, True)],
        out_shape=[jax.ShapeDtypeStruct((batch, t_len, heads, v_dim), v.dtype), stat, stat],
        plan=plan, name="flash_attention_fwd")


# --- backward ---------------------------------------------------------------------------------


def _grad_tile(qb, kb, vb, dob, m, inv_l, delta, bh, start_q, start_k, key_ok, s_len, words,
               plan: _Plan) -> tuple[Array, Array]:
    """For one ``[bq, bk]`` tile: the kept, unscaled probabilities ``Z∘P`` that dV needs, and
    ``dS = P∘(dP - D)`` with ``dP = r Z∘(dO Vᵀ)``, zero where the mask removed the score (no
    gradient reaches a masked score, as through `jnp.where` in the XLA path)."""
    s, through, real, keep = _tile(qb, kb, bh, start_q, start_k, key_ok, s_len, words, plan)
    p = _zero_unless(real, jnp.exp(s - m[:, None]) * inv_l[:, None])
    dp = _dot(dob, vb, (1, 1))
    if keep is not None:
        dp = jnp.where(keep, dp * jnp.float32(1.0 / (1.0 - plan.rate)), jnp.float32(0))
    ds = _zero_unless(through, p * (dp - delta[:, None]))
    return _zero_unless(keep, p), ds


def _backward_dq(q, k, v, dout, stats, mask, words, plan: _Plan) -> Array:
    """dQ [B, T, H, D]: one program per query block, looping over key blocks."""
    batch, t_len, heads, head_dim = q.shape
    s_len, v_dim = k.shape[1], v.shape[3]
    bq, bk = plan.bwd_blocks

    def kernel(*refs):
        ins, mask_ref, key_words, (dq_ref,) = _split_refs(refs, plan, 7)
        q_ref, k_ref, v_ref, do_ref, m_ref, inv_l_ref, d_ref = ins
        bh, i = pl.program_id(0), pl.program_id(1)
        qb, dob, mb, inv_l, db = (r[...] for r in (q_ref, do_ref, m_ref, inv_l_ref, d_ref))

        def body(j, dq):
            start = pl.multiple_of(j * bk, bk)
            kb = k_ref[pl.ds(start, bk), :]
            key_ok = None if mask_ref is None else (mask_ref[pl.ds(start, bk)] != 0)[None, :]
            _, ds = _grad_tile(qb, kb, v_ref[pl.ds(start, bk), :], dob, mb, inv_l, db, bh,
                               i * bq, start, key_ok, s_len, key_words, plan)
            return dq + _dot(ds.astype(kb.dtype), kb, (1, 0))

        dq = lax.fori_loop(0, _key_blocks(i, bq, bk, s_len // bk, plan), body,
                           jnp.zeros((bq, head_dim), jnp.float32))
        dq_ref[...] = (dq * jnp.float32(plan.scale)).astype(dq_ref.dtype)

    return _call(
        kernel, [q, k, v, dout, *stats],
        [_heads_spec(heads, bq, head_dim, True), _heads_spec(heads, s_len, head_dim, False),
         _heads_spec(heads, s_len, v_dim, False), _heads_spec(heads, bq, v_dim, True),
         *(_rows_spec(bq, True) for _ in stats)],
        mask, words, mask_spec=_rows_spec(s_len, False, heads), grid=(batch * heads, t_len // bq),
        out_specs=_heads_spec(heads, bq, head_dim, True),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype), plan=plan,
        name="flash_attention_bwd_dq")


def _backward_dkdv(q, k, v, dout, stats, mask, words, plan: _Plan) -> tuple[Array, Array]:
    """dK [B, S, H, D] and dV [B, S, H, K]: one program per key block, looping over query
    blocks (Dao 2023, Alg. 2: keys outside, so dK and dV stay in registers)."""
    batch, t_len, heads, head_dim = q.shape
    s_len, v_dim = k.shape[1], v.shape[3]
    bq, bk = plan.bwd_blocks

    def kernel(*refs):
        ins, mask_ref, key_words, (dk_ref, dv_ref) = _split_refs(refs, plan, 7)
        q_ref, k_ref, v_ref, do_ref, m_ref, inv_l_ref, d_ref = ins
        bh, j = pl.program_id(0), pl.program_id(1)
        kb, vb = k_ref[...], v_ref[...]
        key_ok = None if mask_ref is None else (mask_ref[...] != 0)[None, :]

        def body(i, carry):
            dk, dv = carry
            start = pl.multiple_of(i * bq, bq)
            qb, dob = q_ref[pl.ds(start, bq), :], do_ref[pl.ds(start, bq), :]
            mb, inv_l, db = (r[pl.ds(start, bq)] for r in (m_ref, inv_l_ref, d_ref))
            p_kept, ds = _grad_tile(qb, kb, vb, dob, mb, inv_l, db, bh, start, j * bk, key_ok,
                                    s_len, key_words, plan)
            dv = dv + _dot(p_kept.astype(dob.dtype), dob, (0, 0))
            return dk + _dot(ds.astype(qb.dtype), qb, (0, 0)), dv

        # Causal: only rows t >= s, so start at the query block holding this block's first key.
        first = lax.div(j * bk, bq) if plan.skip_causal else 0
        init = (jnp.zeros((bk, head_dim), jnp.float32), jnp.zeros((bk, v_dim), jnp.float32))
        dk, dv = lax.fori_loop(first, t_len // bq, body, init)
        dk_ref[...] = (dk * jnp.float32(plan.scale)).astype(dk_ref.dtype)
        dv_ref[...] = (dv * jnp.float32(1.0 / (1.0 - plan.rate))).astype(dv_ref.dtype)

    return _call(
        kernel, [q, k, v, dout, *stats],
        [_heads_spec(heads, t_len, head_dim, False), _heads_spec(heads, bk, head_dim, True),
         _heads_spec(heads, bk, v_dim, True), _heads_spec(heads, t_len, v_dim, False),
         *(_rows_spec(t_len, False) for _ in stats)],
        mask, words, mask_spec=_rows_spec(bk, True, heads), grid=(batch * heads, s_len // bk),
        out_specs=[_heads_spec(heads, bk, head_dim, True), _heads_spec(heads, bk, v_dim, True)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        plan=plan, name="flash_attention_bwd_dkdv")
