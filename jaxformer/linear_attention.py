"""Linear attention as one pure kernel with four interchangeable modes, plus O(1) decoding.

Shape letters: B batch, T query tokens, S key tokens (S = T when causal), H heads, D q/k head
dim, K value head dim (``Dv``), M feature dim of φ, W chunk size, G = ⌈T/W⌉ chunks.

The maths (Katharopoulos et al. 2020 eq. 4-6; Su, kexue.fm post 7546)::

    out_t = φ(q_t)ᵀ S_t / (φ(q_t)ᵀ z_t + eps),   S_t = Σ_{s ∈ Ω(t)} φ(k_s) v_sᵀ,   z_t = Σ_{s ∈ Ω(t)} φ(k_s)

where the window Ω(t) is every key (non-causal) or keys s ≤ t (causal), in both cases only
keys of t's document and not masked out. Grouping ``φ(K)ᵀV`` first is what makes the cost
``O(T M K)`` instead of ``O(T² D)``: 2·T·M·K multiply-adds per head for the state and as many
for the read-out, vs 2·T²·D for ``QKᵀ`` and ``AV`` (post 8610: cheaper iff T > M).

| mode | form | cost / memory |
|---|---|---|
| ``"parallel"`` | non-causal ``φ(Q)(φ(K)ᵀV)`` | 4·T·M·K FLOPs; one ``[M, K]`` state |
| ``"chunked"`` | causal: inside a chunk the masked ``(φQφKᵀ ⊙ mask)V``, across chunks the states ``S_n`` (a prefix sum over G chunk states: no sequential loop) | 4·T·M·K + 2·T·W·(M + K); G states ``[M, K]`` |
| ``"scan"`` | causal recurrence ``S_t = S_{t-1} + φ(k_t)v_tᵀ`` with `lax.scan`, rematerialised per chunk so the backward pass stores G states, not T | 4·T·M·K, sequential in T |
| ``"quadratic"`` | the masked ``(φQφKᵀ ⊙ mask)V``: the test reference | 2·T²·(M + K) |
| ``"auto"`` | see :func:`auto_mode` | |

``chunked`` and ``scan`` with ``causal=False`` compute the bidirectional sum as a forward
inclusive pass plus a backward exclusive pass; ``parallel`` falls back to this when there are
``segment_ids``, since one global state cannot be reset.

Conventions:

* **Documents** are maximal runs of equal ``segment_ids`` (packing, as fla's ``cu_seqlens``):
  the state resets wherever ``segment_ids[t] != segment_ids[t-1]``. Two separate runs with the
  same id are different documents.
* ``mask`` ``[B, S]`` (True / 1 = real token) removes keys by zeroing their features, so it works
  in every mode; outputs at masked *query* positions are computed but meaningless.
* ``initial_state`` belongs to the first document of each row; ``return_state`` gives the state
  of the last document (what a continuation of that document needs).
* **RoPE** (Su et al. 2021, RoFormer §3.3): with ``rope_positions``, ``apply_rope`` rotates φ(q)
  and φ(k) in the numerator only. The denominator keeps the unrotated features: rotated products
  can be negative and could drive it to zero. The state then holds the rotated ``Σ R φ(k) vᵀ``
  and the unrotated ``Σ φ(k)``.
* **Precision**: with bf16/fp16 inputs the intra-chunk scores and every state and denominator
  accumulate in fp32 (the fast-transformers #32 / fla #1187 overflows); the output is cast back
  to ``v.dtype``.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float, Integer, PRNGKeyArray

from jaxformer.feature_maps import compute_dtype, resolve_feature_map
from jaxformer.functional import Precision, precision_scope
from jaxformer.rope import apply_rope

MODES = ("auto", "parallel", "chunked", "scan", "quadratic")
NORMALIZERS = ("divide", "rmsnorm", "none")
DEFAULT_EPS = {"divide": 1e-6, "rmsnorm": 1e-5, "none": 0.0}


class LinearState(NamedTuple):
    """The recurrent state of linear attention, in fp32.

    Attributes:
      kv: ``[B, H, M, K]``, ``Σ φ(k) vᵀ`` (RoPE-rotated features when RoPE is on).
      z: ``[B, H, M]``, ``Σ φ(k)`` (never rotated), the denominator's state.
    """

    kv: Float[Array, "B H M K"]
    z: Float[Array, "B H M"]


def init_state(batch: int, heads: int, feature_dim: int, value_dim: int, *,
               dtype: DTypeLike = jnp.float32) -> LinearState:
    """An all-zero state: the start of every sequence. Keep fp32 for bf16/fp16 models; use
    float64 only for float64 inputs (the state dtype is the step's accumulation dtype)."""
    return LinearState(jnp.zeros((batch, heads, feature_dim, value_dim), dtype),
                       jnp.zeros((batch, heads, feature_dim), dtype))



def auto_mode(*, causal: bool, length: int, platform: str | None = None) -> str:
    """The mode ``mode="auto"`` runs.

    Non-causal: ``"parallel"`` (one ``[M, K]`` state; nothing is cheaper). Causal:
    ``"chunked"``, except ``"scan"`` on CPU from T = 4096 up. Measured on a 2-core CPU (fp32,
    D = M = K = 64, W = 64, interleaved medians, idle machine), chunked vs scan in ms:

    | B, H | T = 128 | 512 | 2048 | 8192 |
    |---|---|---|---|---|
    | 1, 8 | 1.28 vs 1.58 | 5.61 vs 5.84 | 17.4 vs 17.8 | 104 vs 92 |
    | 8, 12 | 9.84 vs 16.0 | 82.3 vs 110 | | |

    So chunked is as fast or faster at every length but the longest, where the token scan is
    12% faster and needs 20% less temporary memory (65 vs 81 MiB at T = 8192,
    ``results/cpu/linear_attention.md``). On GPU/TPU the chunk matmuls keep the matrix units
    busy while a token scan launches T tiny sequential steps (fla's design; Performer JAX's
    README reports its scan slow there), so chunked is the choice at every length.
    """
    if not causal:
        return "parallel"
    platform = jax.default_backend() if platform is None else platform
    return "scan" if platform == "cpu" and length >= 4096 else "chunked"


# --------------------------------------------------------------------------- validation


def _check_inputs(q: Array, k: Array, v: Array, *, causal: bool, mode: str, normalize: str,
                  chunk_size: int, mask: Array | None, segment_ids: Array | None,
                  initial_state: Any) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, H, D], got shape {tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, t, h, d = q.shape
    if k.shape[0] != b or k.shape[2:] != (h, d):
        raise ValueError(f"k has shape {tuple(k.shape)}; expected [B={b}, S, H={h}, D={d}] like q")
    s = k.shape[1]
    if v.shape[:3] != (b, s, h):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected [B={b}, S={s}, H={h}, Dv] "
                         "(same batch, length and heads as k)")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if causal and mode == "parallel":
        raise ValueError('mode="parallel" is the non-causal form; with causal=True use '
                         '"chunked", "scan", "quadratic" or "auto"')
    if normalize not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if (causal or segment_ids is not None or mode in ("chunked", "scan")) and s != t:
        raise ValueError(f"causal attention, segment_ids and modes \"chunked\"/\"scan\" need S == T, "
                         f"got T={t} queries and S={s} keys (mode={mode!r})")
    if mask is not None and tuple(mask.shape) != (b, s):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, S] = {(b, s)}")
    if segment_ids is not None:
        if tuple(segment_ids.shape) != (b, t):
            raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)}; expected "
                             f"[B, T] = {(b, t)}")
        if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
            raise TypeError(f"segment_ids must be an integer array, got dtype {segment_ids.dtype}")
    if initial_state is not None and not isinstance(initial_state, LinearState):
        raise TypeError(f"initial_state must be a LinearState, got {type(initial_state).__name__}")


def _check_state(state: LinearState, *, b: int, h: int, f: int, kdim: int) -> None:
    want = ((b, h, f, kdim), (b, h, f))
    got = (tuple(state.kv.shape), tuple(state.z.shape))
    if got != want:
        raise ValueError(f"initial_state has kv {got[0]} and z {got[1]}; expected kv [B, H, M, Dv] "
                         f"= {want[0]} and z [B, H, M] = {want[1]}")


# --------------------------------------------------------------------------- core forms
# Every form below computes, for "features" a (queries), b (keys), values c and a start
# state c0 [B, H, M, K], the causal product out_t = Σ_{s ≤ t, same doc} (a_t·b_s) c_s + [doc_t =
# doc_0] a_t·c0, and the state of the last document. The denominator is the same product with
# c = 1, so without RoPE one call computes both (c = [v, 1]).


def _same_doc(doc_t: Array, doc_s: Array) -> Array:
    return doc_t[..., :, None] == doc_s[..., None, :]


def _quadratic(a, b, c, c0, doc, causal):
    # a, b: [B, H, T, M] in the input dtype; c: [B, H, T, K]; doc: [B, T] or None.
    acc = c0.dtype
    t, s = a.shape[2], b.shape[2]  # s = t unless non-causal cross-attention
    scores = jnp.einsum("bhtf,bhsf->bhts", a, b, preferred_element_type=acc)
    keep = jnp.ones((1, 1, t, s), bool) if not causal else jnp.asarray(np.tril(np.ones((t, t), bool)))[None, None]
    if doc is not None:
        keep = keep & _same_doc(doc, doc)[:, None]
    scores = jnp.where(keep, scores, jnp.zeros((), acc))
    out = jnp.einsum("bhts,bhsk->bhtk", scores, c.astype(acc))
    first = jnp.ones((a.shape[0], 1, t, 1), bool) if doc is None else (doc == doc[:, :1])[:, None, :, None]
    out = out + jnp.where(first, jnp.einsum("bhtf,bhfk->bhtk", a.astype(acc), c0), jnp.zeros((), acc))
    last = jnp.ones((a.shape[0], 1, s, 1), bool) if doc is None else (doc == doc[:, -1:])[:, None, :, None]
    state = jnp.einsum("bhsf,bhsk->bhfk", jnp.where(last, b.astype(acc), jnp.zeros((), acc)), c.astype(acc))
    keep0 = True if doc is None else (doc[:, 0] == doc[:, -1])[:, None, None, None]
    return out, state + jnp.where(keep0, c0, jnp.zeros((), acc))


def _pad_time(x: Array, n: int, axis: int, value: Any = 0) -> Array:
    if n == 0:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n)
    return jnp.pad(x, pad, constant_values=value)


def _chunked(a, b, c, c0, doc, chunk):
    """Causal chunked form (fla's "chunk" algorithm written as prefix sums over chunk states)."""
    bsz, h, t, f = a.shape
    kdim, acc = c.shape[-1], c0.dtype
    cs = min(chunk, t)
    n = -(-t // cs)
    pad = n * cs - t
    # Padded keys have zero features, so they add nothing; padded queries are cut off at the end.
    a, b, c = (_pad_time(x, pad, 2).reshape(bsz, h, n, cs, x.shape[-1]) for x in (a, b, c))
    tril = jnp.asarray(np.tril(np.ones((cs, cs), bool)))
    if doc is None:
        intra_keep = tril[None, None, None]
    else:
        docp = _pad_time(doc, pad, 1, value=0)
        docp = jnp.where(jnp.arange(n * cs) < t, docp, doc[:, -1:]).reshape(bsz, n, cs)
        intra_keep = (tril[None, None] & _same_doc(docp, docp))[:, None]
    scores = jnp.einsum("bhncf,bhnsf->bhncs", a, b, preferred_element_type=acc)
    # The masked scores feed the second matmul in the input dtype when it is bf16 (fp32's
    # range; fla does the same), but in fp32 for fp16, whose 65504 ceiling φ(q)ᵀφ(k) can pass.
    low = c.dtype if c.dtype == jnp.bfloat16 else acc
    scores = jnp.where(intra_keep, scores, jnp.zeros((), acc)).astype(low)
    intra = jnp.einsum("bhncs,bhnsk->bhnck", scores, c.astype(low), preferred_element_type=acc)
    if doc is None:
        local = jnp.einsum("bhnsf,bhnsk->bhnfk", b, c, preferred_element_type=acc)
        # Not jnp.cumsum: XLA:CPU lowers it to a reduce-window that is O(G^2) in the number of
        # chunks (75 ms vs 10 ms for the associative scan at G = 128, 8 heads of 64 x 65).
        inclusive = jax.lax.associative_scan(jnp.add, local, axis=2) + c0[:, :, None]
        prev = jnp.concatenate([c0[:, :, None], inclusive[:, :, :-1]], axis=2)  # state before chunk n
        inter = jnp.einsum("bhncf,bhnfk->bhnck", a.astype(acc), prev)
        state = inclusive[:, :, -1]
    else:
        last = docp[:, :, -1]                                       # [B, G] doc at each chunk end
        prev_last = jnp.concatenate([doc[:, :1], last[:, :-1]], axis=1)  # doc of the incoming state
        w = (docp == last[:, :, None])[:, None, :, :, None]         # keys that reach the next chunk
        local = jnp.einsum("bhnsf,bhnsk->bhnfk", jnp.where(w, b, jnp.zeros((), b.dtype)), c,
                           preferred_element_type=acc)
        gate = (last == prev_last).astype(acc)[:, None, :, None, None]  # 0 where a doc starts

        def combine(x, y):  # S_n = g_n S_{n-1} + U_n, composed associatively
            return x[0] * y[0], y[0] * x[1] + y[1]

        g_all = jnp.concatenate([jnp.ones_like(gate[:, :, :1]), gate], axis=2)
        u_all = jnp.concatenate([c0[:, :, None], local], axis=2)
        _, states = jax.lax.associative_scan(combine, (g_all, u_all), axis=2)
        prev = states[:, :, :-1]                                    # state entering chunk n
        reach = (docp == prev_last[:, :, None])[:, None, :, :, None]  # queries of that doc
        inter = jnp.where(reach, jnp.einsum("bhncf,bhnfk->bhnck", a.astype(acc), prev),
                          jnp.zeros((), acc))
        state = states[:, :, -1]
    out = (intra + inter).reshape(bsz, h, n * cs, kdim)[:, :, :t]
    return out, state


def _scan(a, b, c, c0, doc, chunk):
    """Causal token recurrence; the inner scan over each chunk is rematerialised in the backward
    pass, so autodiff stores G = ⌈T/W⌉ states instead of T (linear-attention-transformer #2).

    The inner scan is not unrolled: on XLA:CPU ``unroll=4`` was measured 3.7x and ``unroll=16``
    9.5x slower at T = 8192, H = 8, D = 64 (Performer's GPU advice does not carry over)."""
    bsz, h, t, f = a.shape
    acc = c0.dtype
    cs = min(chunk, t)
    n = -(-t // cs)
    pad = n * cs - t
    docp = jnp.zeros((bsz, t), jnp.int32) if doc is None else doc
    gate = jnp.concatenate([jnp.ones((bsz, 1), bool), docp[:, 1:] == docp[:, :-1]], axis=1)
    gate = _pad_time(gate, pad, 1, value=True)

    def to_steps(x):  # [B, H, T, X] -> [G, W, B, H, X]
        x = _pad_time(x, pad, 2)
        return jnp.moveaxis(x.reshape(bsz, h, n, cs, x.shape[-1]), (2, 3), (0, 1))

    xs = (to_steps(a.astype(acc)), to_steps(b.astype(acc)), to_steps(c.astype(acc)),
          jnp.moveaxis(gate.reshape(bsz, n, cs), (1, 2), (0, 1)))

    def token(state, x):
        at, bt, ct, gt = x
        state = jnp.where(gt[:, None, None, None], state, jnp.zeros((), acc))
        state = state + jnp.einsum("bhf,bhk->bhfk", bt, ct)
        return state, jnp.einsum("bhf,bhfk->bhk", at, state)

    @jax.checkpoint
    def chunk_body(state, x):
        return jax.lax.scan(token, state, x)

    state, out = jax.lax.scan(chunk_body, c0, xs)           # out: [G, W, B, H, K]
    out = jnp.moveaxis(out, (0, 1), (2, 3)).reshape(bsz, h, n * cs, -1)[:, :, :t]
    return out, state


_CAUSAL_FORMS = {"chunked": _chunked, "scan": _scan}


def _product(a, b, c, c0, doc, *, causal, mode, chunk):
    """Dispatch one (a, b, c, c0) product to a mode; returns (out [B,H,T,K], state), both in
    the accumulation dtype ``c0.dtype``."""
    acc = c0.dtype
    if mode == "quadratic":
        return _quadratic(a, b, c, c0, doc, causal)
    if causal:
        return _CAUSAL_FORMS[mode](a, b, c, c0, doc, chunk)
    if mode == "parallel" and doc is None:
        state = jnp.einsum("bhsf,bhsk->bhfk", b, c, preferred_element_type=acc) + c0
        return jnp.einsum("bhtf,bhfk->bhtk", a.astype(acc), state), state
    # Bidirectional = forward inclusive + backward exclusive (the diagonal counted once).
    form = _CAUSAL_FORMS["chunked" if mode == "parallel" else mode]
    fwd, state = form(a, b, c, c0, doc, chunk)
    flip = lambda x: jnp.flip(x, axis=2)  # noqa: E731
    bwd, _ = form(flip(a), flip(b), flip(c), jnp.zeros_like(c0),
                  None if doc is None else jnp.flip(doc, axis=1), chunk)
    diag = jnp.einsum("bhtf,bhtf->bht", a, b, preferred_element_type=acc)[..., None] * c.astype(acc)
    return fwd + flip(bwd) - diag, state


def _finish(num: Array, den: Array | None, *, normalize: str, eps: float, dtype: Any) -> Array:
    if normalize == "divide":
        out = num / (den + jnp.asarray(eps, num.dtype))
    elif normalize == "rmsnorm":
        out = num * jax.lax.rsqrt(jnp.mean(num * num, axis=-1, keepdims=True)
                                  + jnp.asarray(eps, num.dtype))
    else:
        out = num
    return out.astype(dtype)


# --------------------------------------------------------------------------- public kernel


def linear_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    causal: bool,
    mode: str = "auto",
    feature_map: Any = "elu+1",
    normalize: str = "divide",
    eps: float | None = None,
    chunk_size: int = 64,
    mask: Array | None = None,
    segment_ids: Array | None = None,
    initial_state: LinearState | None = None,
    return_state: bool = False,
    rope_positions: Array | None = None,
    rope_options: Mapping[str, Any] | None = None,
    feature_key: PRNGKeyArray | None = None,
    precision: Precision = None,
) -> Float[Array, "B T H K"] | tuple[Float[Array, "B T H K"], LinearState]:
    # Array arguments are annotated plain `Array`: `_check_inputs` names the argument, the
    # expected and the actual shape, which a generic type-check error would pre-empt.
    """Linear attention ``φ(Q)(φ(K)ᵀV)`` normalised, in any mode (module docstring).

    Args:
      q, k: ``[B, T, H, D]`` and ``[B, S, H, D]``.
      v: ``[B, S, H, K]``.
      causal: whether query t sees only keys s ≤ t.
      mode: ``"auto"``, ``"parallel"``, ``"chunked"``, ``"scan"`` or ``"quadratic"``.
      feature_map: a name in `jaxformer.feature_maps.FEATURE_MAPS`, ``"favor+"`` (with
        ``feature_key``), a `FavorPlus`, a callable ``[..., D] -> [..., M]`` or a pair of them
        (query map, key map).
      normalize: ``"divide"`` (``/(φ(q)ᵀΣφ(k) + eps)``), ``"rmsnorm"`` (no denominator; a
        parameter-free RMSNorm over K, fla's default) or ``"none"``.
      eps: defaults to 1e-6 for ``"divide"`` (fast-transformers) and 1e-5 for ``"rmsnorm"``.
      chunk_size: W for ``"chunked"`` (and the remat interval of ``"scan"``); need not divide T.
      mask: ``[B, S]`` bool or 0/1, True for real keys.
      segment_ids: ``[B, T]`` int; the state resets where it changes.
      initial_state: a `LinearState` ``([B, H, M, K], [B, H, M])`` continuing a document.
      return_state: also return the final `LinearState`.
      rope_positions: ``[B|1, T]`` or ``[B|1, T, A]`` positions: rotate the numerator's φ(q),
        φ(k) with `jaxformer.rope.apply_rope` (requires even M).
      rope_options: keyword arguments for `apply_rope` (``layout``, ``base``, ``sections``, ...).
      feature_key: PRNG key for ``feature_map="favor+"``.
      precision: ``precision=`` of every matmul (`jaxformer.functional.resolve_precision`;
        None follows jax's configured default).

    Returns:
      ``[B, T, H, K]`` in ``v.dtype``, and the final state when ``return_state``.
    """
    with precision_scope(precision):
        _check_inputs(q, k, v, causal=causal, mode=mode, normalize=normalize, chunk_size=chunk_size,
                      mask=mask, segment_ids=segment_ids, initial_state=initial_state)
        b, t, h, d = q.shape
        kdim = v.shape[-1]
        if mode == "auto":
            mode = auto_mode(causal=causal, length=t)
        eps = DEFAULT_EPS[normalize] if eps is None else float(eps)
        phi_q, phi_k = resolve_feature_map(feature_map, head_dim=d, key=feature_key)
        fq, fk = phi_q(q), phi_k(k)
        if fq.shape[:3] != q.shape[:3] or fk.shape[:3] != k.shape[:3] or fq.shape[-1] != fk.shape[-1]:
            raise ValueError(f"feature_map must map [B, T, H, D] to [B, T, H, M] with one M for q and k; "
                             f"got {tuple(fq.shape)} for q and {tuple(fk.shape)} for k")
        f = fq.shape[-1]
        if mask is not None:
            keep = mask if mask.dtype == jnp.bool_ else mask != jnp.zeros((), mask.dtype)
            fk = jnp.where(keep[:, :, None, None], fk, jnp.zeros((), fk.dtype))
        doc = None
        if segment_ids is not None:
            change = jnp.concatenate([jnp.zeros((b, 1), jnp.int32),
                                      (segment_ids[:, 1:] != segment_ids[:, :-1]).astype(jnp.int32)], axis=1)
            doc = jnp.cumsum(change, axis=1)
        acc = compute_dtype(v.dtype)  # fp32, or float64 for float64 inputs
        if initial_state is None:
            c0 = init_state(b, h, f, kdim, dtype=acc)
        else:
            _check_state(initial_state, b=b, h=h, f=f, kdim=kdim)
            c0 = LinearState(*(x.astype(acc) for x in initial_state))
        heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  [B, T, H, X] -> [B, H, T, X]
        run = lambda a_, b_, c_, s0: _product(a_, b_, c_, s0, doc, causal=causal, mode=mode,  # noqa: E731
                                              chunk=chunk_size)
        vh = heads_first(v)
        need_den = normalize == "divide"
        if rope_positions is None:
            a, bk = heads_first(fq), heads_first(fk)
            if need_den or return_state:  # one pass: the denominator is the value column of ones
                ones = jnp.ones(vh.shape[:3] + (1,), vh.dtype)
                s0 = jnp.concatenate([c0.kv, c0.z[..., None]], axis=-1)
                both, st = run(a, bk, jnp.concatenate([vh, ones], axis=-1), s0)
                num, den, state = both[..., :kdim], both[..., kdim:], LinearState(st[..., :kdim], st[..., kdim])
            else:
                (num, _), den, state = run(a, bk, vh, c0.kv), None, None
        else:
            if f % 2:
                raise ValueError(f"RoPE on linear-attention features needs an even feature dim M, got M={f}")
            rot = lambda x: apply_rope(x, rope_positions, **dict(rope_options or {}))  # noqa: E731
            num, st = run(heads_first(rot(fq)), heads_first(rot(fk)), vh, c0.kv)
            a, bk = heads_first(fq), heads_first(fk)
            den, state = None, None
            if need_den or return_state:
                den, zs = run(a, bk, jnp.ones(vh.shape[:3] + (1,), vh.dtype), c0.z[..., None])
                state = LinearState(st, zs[..., 0])
        den = den if need_den else None
        out = jnp.swapaxes(_finish(num, den, normalize=normalize, eps=eps, dtype=v.dtype), 1, 2)
        return (out, state) if return_state else out


def step(
    state: LinearState,
    q_t: Array,
    k_t: Array,
    v_t: Array,
    *,
    feature_map: Any = "elu+1",
    normalize: str = "divide",
    eps: float | None = None,
    position: Array | None = None,
    rope_options: Mapping[str, Any] | None = None,
    precision: Precision = None,
) -> tuple[Float[Array, "B H K"], LinearState]:
    """One causal decoding step in O(M·K) memory: add token t to the state, then read it out.

    ``q_t, k_t: [B, H, D]``, ``v_t: [B, H, K]``; ``position`` ``[B|1]`` (or ``[B|1, A]``) is the
    token's RoPE position when the attention uses RoPE. Pass a `FavorPlus` (not ``"favor+"``) so
    every step uses the same features. A sequence of steps equals
    ``linear_attention(..., causal=True)`` token by token. ``precision`` as in
    `linear_attention`.
    """
    for name, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have rank 3 [B, H, D], got shape {tuple(x.shape)}")
    if q_t.shape != k_t.shape or v_t.shape[:2] != q_t.shape[:2]:
        raise ValueError(f"q_t {tuple(q_t.shape)}, k_t {tuple(k_t.shape)} and v_t {tuple(v_t.shape)} "
                         "must be [B, H, D], [B, H, D] and [B, H, Dv]")
    if normalize not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
    eps = DEFAULT_EPS[normalize] if eps is None else float(eps)
    phi_q, phi_k = resolve_feature_map(feature_map, head_dim=q_t.shape[-1])
    acc = state.kv.dtype
    fq, fk = phi_q(q_t).astype(acc), phi_k(k_t).astype(acc)
    b, h = q_t.shape[:2]
    _check_state(state, b=b, h=h, f=fq.shape[-1], kdim=v_t.shape[-1])
    z = state.z + fk
    if position is None:
        rq, rk = fq, fk
    else:
        pos = position[:, None] if position.ndim == 1 else position[:, None, :]
        rot = lambda x: apply_rope(x[:, None], pos, **dict(rope_options or {}))[:, 0]  # noqa: E731
        rq, rk = rot(fq), rot(fk)
    with precision_scope(precision):
        kv = state.kv + jnp.einsum("bhf,bhk->bhfk", rk, v_t.astype(acc))
        num = jnp.einsum("bhf,bhfk->bhk", rq, kv)
        den = jnp.einsum("bhf,bhf->bh", fq, z)[..., None] if normalize == "divide" else None
    return _finish(num, den, normalize=normalize, eps=eps, dtype=v_t.dtype), LinearState(kv, z)
