"""Analytic FLOPs of a Transformer layer per operation, and XLA's own count, read robustly.

Shape letters (README glossary): B batch, T tokens (``seq_len``), E model width (``d_model``),
H heads, D head dim, F FFN width, M linear-attention feature dim, K value head dim, W chunk size.

FLOPs are 2 per multiply-add (the XLA / MaxText / PaLM convention); Su's post 8610 counts
*multiplications*, half of that. The matmul terms of one layer's forward pass (``"kit"``, the
count of what this kit's kernels execute):

| op | FLOPs |
|---|---|
| embedding | 0 (a gather) |
| qkv | 2·B·T·E·(3·H·D) |
| scores ``QKᵀ`` | 2·B·H·T²·D (halved only with ``causal_skip``: a kernel that skips the masked half) |
| attention·V | 2·B·H·T²·K (likewise) |
| out_proj | 2·B·T·H·K·E |
| ffn | 2·B·T·E·F·2 |
| linear attention (instead of scores and attention·V) | state ``φ(K)ᵀV`` 2·B·H·T·M·K, read-out 2·B·H·T·M·K, denominator 4·B·H·T·M, and for ``mode="chunked"`` the masked intra-chunk products 2·B·H·T·W·(M + K) |

RoPE, softmax, LayerNorm, activations and feature maps are elementwise; they are reported on
their own lines (``elementwise``) with the per-element costs stated below, and not added to the
matmul total that MFU and the conventions use.

Conventions, all per layer, forward:

* ``"kit"``: the table above.
* ``"su"``: post 8610's multiplication count, ``12·T·E² + 2·T²·E`` at BERT shapes (= kit / 2,
  never halved for causality).
* ``"palm"``: PaLM App. B, training ``6N + 12·L·H·Q·T`` per token, i.e. forward ``2N + 4·H·D·T``
  per token with N the layer's matmul parameters: full (non-causal) attention.
* ``"maxtext"``: as ``"kit"`` but the attention terms are halved whenever ``causal`` (MaxText,
  Megatron, NeMo), whatever the kernel does.

Backward is twice the forward for matmuls, so ``training=True`` multiplies them by 3 (and the
elementwise lines by 2).

XLA's count (:func:`xla_flops`) comes from ``Compiled.cost_analysis()``, which was a list of dicts
in older JAX and is a dict in 0.10, may be None or -1 on some GPUs, and counts the body of a
``while`` loop (``lax.scan``, ``fori_loop``) once. :func:`xla_flops` therefore reads every form and
flags any loop it finds in the optimised HLO with its trip count, rather than returning a
silently undercounted figure. On a GPU it also misses the dots XLA hands to cuBLAS/cuDNN.

:func:`hlo_flops` / :func:`hlo_cost` (``jaxformer.hlo_flops``, re-exported here) count the
matmuls of the *lowered* StableHLO instead, before XLA rewrites anything: the same number on every
backend, loop bodies times their trip counts, comparable with ``layer_flops(...)["matmul_total"]``.
"""

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax

# Re-exported: the backend-independent count lives in its own module (one concept per file).
from jaxformer.hlo_flops import HloFlops, hlo_cost, hlo_flops, stablehlo_cost  # noqa: F401

CONVENTIONS = ("kit", "su", "palm", "maxtext")
ATTENTIONS = ("softmax", "linear")
# FLOPs per element of the elementwise terms, as XLA counts them (measured with `xla_flops` on
# jax 0.10 CPU; exp/erf/tanh are also counted as "transcendentals", separately).
SOFTMAX_PER_SCORE = 4
LAYER_NORM_PER_ELEMENT = 7
ACTIVATION_PER_ELEMENT = {"gelu": 64, "gelu_new": 8, "gelu_pytorch_tanh": 8, "relu": 1}  # gelu: erf
ROPE_PER_ELEMENT = 3        # x·cos + rotate(x)·sin
FEATURE_MAP_PER_ELEMENT = 4  # elu + 1


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One Transformer layer's shape and attention kind, for :func:`layer_flops`.

    Attributes:
      d_model: E. heads: H. ffn: F. seq_len: T. batch: B.
      head_dim: D (default E / H); value_dim: K (default D).
      attention: ``"softmax"`` or ``"linear"``.
      causal: causal attention. causal_skip: the kernel skips the masked half (flash-style);
        XLA's ``dot_product_attention`` on CPU does not, nor does ``mode="quadratic"``.
      feature_dim: M for linear attention (default D). linear_mode: ``"parallel"``,
        ``"chunked"``, ``"scan"``; chunk_size: W.
      rope: whether q and k are rotated.
      activation: the FFN activation's HF name (its elementwise cost differs 64x: exact GELU's
        erf polynomial vs ReLU).
    """

    d_model: int
    heads: int
    ffn: int
    seq_len: int
    batch: int = 1
    head_dim: int | None = None
    value_dim: int | None = None
    attention: str = "softmax"
    causal: bool = False
    causal_skip: bool = False
    feature_dim: int | None = None
    linear_mode: str = "chunked"
    chunk_size: int = 64
    rope: bool = False
    activation: str = "gelu"

    def __post_init__(self) -> None:
        for name in ("d_model", "heads", "ffn", "seq_len", "batch", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LayerShape.{name} must be a positive int, got {value!r}")
        for name in ("head_dim", "value_dim", "feature_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"LayerShape.{name} must be None or a positive int, got {value!r}")
        if self.head_dim is None and self.d_model % self.heads:
            raise ValueError(f"LayerShape.d_model={self.d_model} is not divisible by heads={self.heads}; "
                             "pass head_dim explicitly")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"LayerShape.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.activation not in ACTIVATION_PER_ELEMENT:
            raise ValueError(f"LayerShape.activation must be one of {sorted(ACTIVATION_PER_ELEMENT)}, "
                             f"got {self.activation!r}")
        if self.linear_mode not in ("parallel", "chunked", "scan"):
            raise ValueError("LayerShape.linear_mode must be one of ('parallel', 'chunked', 'scan'), "
                             f"got {self.linear_mode!r}")

    @property
    def d(self) -> int:
        return self.d_model // self.heads if self.head_dim is None else self.head_dim

    @property
    def k(self) -> int:
        return self.d if self.value_dim is None else self.value_dim

    @property
    def m(self) -> int:
        return self.d if self.feature_dim is None else self.feature_dim


def layer_flops(shape: LayerShape, *, convention: str = "kit", training: bool = False
                ) -> dict[str, Any]:
    """Per-operation FLOPs of one layer: ``{"matmul": {op: flops}, "matmul_total": ...,
    "elementwise": {op: flops}, "convention": ..., "training": ...}``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    s = shape
    b, t, e, h, d, kd, f = s.batch, s.seq_len, s.d_model, s.heads, s.d, s.k, s.ffn
    tokens = b * t
    mm: dict[str, float] = {
        "embedding": 0.0,
        "qkv": 2.0 * tokens * e * h * (2 * d + kd),
        "out_proj": 2.0 * tokens * h * kd * e,
        "ffn": 4.0 * tokens * e * f,
    }
    if s.attention == "softmax":
        halve = (convention == "kit" and s.causal and s.causal_skip) or (
            convention == "maxtext" and s.causal)
        factor = 0.5 if halve else 1.0
        mm["scores"] = factor * 2.0 * b * h * t * t * d
        mm["attention_v"] = factor * 2.0 * b * h * t * t * kd
    else:
        m = s.m
        mm["linear_state"] = 2.0 * b * h * t * m * kd
        mm["linear_readout"] = 2.0 * b * h * t * m * kd
        mm["linear_denominator"] = 4.0 * b * h * t * m
        if s.causal and s.linear_mode == "chunked":
            mm["linear_intra_chunk"] = 2.0 * b * h * t * min(s.chunk_size, t) * (m + kd)
    if convention == "su":
        mm = {op: v / 2.0 for op, v in mm.items()}
    elif convention == "palm":
        # 2N + 4·H·D·T per token, N = the layer's matmul weights.
        n_params = e * h * (2 * d + kd) + h * kd * e + 2 * e * f
        mm = {"params": 2.0 * tokens * n_params, "attention": 4.0 * tokens * h * d * t}
    elem: dict[str, float] = {
        "layer_norm": 2.0 * LAYER_NORM_PER_ELEMENT * tokens * e,
        "activation": float(ACTIVATION_PER_ELEMENT[s.activation] * tokens * f),
        # bias adds of the four projections and two FFN matmuls, plus the two residual adds
        "bias_residual": float(tokens * (h * (2 * d + kd) + e + f + e + 2 * e)),
    }
    if s.attention == "softmax":
        elem["softmax"] = float(SOFTMAX_PER_SCORE * b * h * t * t)
    else:
        elem["feature_map"] = float(FEATURE_MAP_PER_ELEMENT * 2 * tokens * h * d)
    if s.rope:
        width = s.m if s.attention == "linear" else d
        elem["rope"] = float(ROPE_PER_ELEMENT * 2 * tokens * h * width)
    # Matmuls: backward = dX and dW, each as costly as the forward, so x3. Elementwise ops:
    # forward plus one backward pass of about the same cost, x2 (XLA counts 1.66x on a BERT layer,
    # where exact GELU's derivative is cheaper than its erf polynomial).
    mm = {op: (3.0 if training else 1.0) * v for op, v in mm.items()}
    elem = {op: (2.0 if training else 1.0) * v for op, v in elem.items()}
    return {"convention": convention, "training": training, "matmul": mm,
            "matmul_total": sum(mm.values()), "elementwise": elem,
            "elementwise_total": sum(elem.values())}


def crossover_lengths(d_model: int, heads: int, ffn: int, *, head_dim: int | None = None,
                      feature_dim: int | None = None, value_dim: int | None = None
                      ) -> dict[str, float]:
    """Sequence lengths where the cost balance of a layer turns (post 8610).

    With P = H·D the attention width: attention (projections 4·T·E·P plus 2·T²·P, in
    multiplications) exceeds the FFN (2·T·E·F) for ``T > E·(F − 2P)/P``; the quadratic term
    exceeds all linear ones (4·T·E·P + 2·T·E·F) for ``T > 2E + E·F/P``. BERT-base: 1536 and 4608.
    With ``feature_dim`` M (and ``value_dim`` K, default M), the linear-attention core
    ``4·T·H·M·K`` is cheaper than softmax's ``4·T²·H·D`` for ``T > M·K/D``: 64 for M = K = D = 64,
    and 16·D = 1024 for Su's "4× head dim" M = K = 4D.
    """
    d = d_model // heads if head_dim is None else head_dim
    p = heads * d
    out = {"attention_exceeds_ffn": d_model * (ffn - 2 * p) / p,
           "quadratic_dominates": 2 * d_model + d_model * ffn / p}
    if feature_dim is not None:
        kd = feature_dim if value_dim is None else value_dim
        out["linear_cheaper_than_softmax"] = feature_dim * kd / d
    return out


# --------------------------------------------------------------------------- XLA's count


@dataclasses.dataclass(frozen=True)
class XlaCost:
    """XLA's FLOP count of one compiled function, with what makes it untrustworthy.

    Attributes:
      flops: ``cost_analysis()["flops"]``, or None when XLA gave none (None, -1, missing).
      loops: ``(name, trip_count or None)`` of every ``while`` in the optimised HLO; their bodies
        are counted once in ``flops``.
      reliable: a number was reported and there are no loops.
      reason: why not, in words ("" when reliable).
    """

    flops: float | None
    loops: tuple[tuple[str, int | None], ...]
    reliable: bool
    reason: str


_WHILE = re.compile(r"%?([\w.\-]+) = [^\n]*? while\(")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


def parse_cost_analysis(raw: Any) -> float | None:
    """The ``flops`` entry of a ``cost_analysis()`` result in any JAX version's form."""
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if raw else None
    if not isinstance(raw, Mapping):
        return None
    value = raw.get("flops")
    if value is None:
        return None
    value = float(value)
    return value if value >= 0 and math.isfinite(value) else None


def hlo_while_loops(hlo_text: str) -> tuple[tuple[str, int | None], ...]:
    """``(name, trip count or None)`` for every ``while`` instruction in HLO text."""
    loops = []
    for line in hlo_text.splitlines():
        match = _WHILE.search(line)
        if match is None:
            continue
        trip = _TRIP.search(line)
        loops.append((match.group(1), int(trip.group(1)) if trip else None))
    return tuple(loops)


def xla_cost(compiled: Any) -> XlaCost:
    """Read the FLOP count of an already compiled executable (``jit(f).lower(...).compile()``),
    flagging while loops; no recompilation."""
    try:
        raw = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError):  # some backends raise instead of returning None
        raw = None
    flops = parse_cost_analysis(raw)
    loops = hlo_while_loops(compiled.as_text() or "")
    reasons = []
    if flops is None:
        reasons.append("cost_analysis() reported no FLOP count")
    if loops:
        trips = ", ".join(f"{name} x{trip if trip is not None else '?'}" for name, trip in loops)
        reasons.append(f"while loops counted once: {trips}")
    return XlaCost(flops, loops, not reasons, "; ".join(reasons))


def xla_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> XlaCost:
    """Compile ``jax.jit(fn)`` for ``args`` and read its FLOP count, flagging loops."""
    return xla_cost(jax.jit(fn).lower(*args, **kwargs).compile())
