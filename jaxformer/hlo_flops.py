"""Matmul FLOPs counted from the lowered StableHLO program: one number on every backend.

``Compiled.cost_analysis()`` (:func:`jaxformer.flops.xla_flops`) reads the *optimised* HLO. By
then XLA on a GPU has turned dots and convolutions into cuBLAS/cuDNN/Triton calls, which its cost
model does not always count (for some shapes a BERT-base layer's figure falls to a few percent of
its matmul FLOPs, and a program with cuDNN fused attention gets no figure at all), and on every
backend it counts the body of a ``while`` loop (``lax.scan``, ``fori_loop``, ``lax.map``) once.
:func:`hlo_flops` reads the program jax hands to XLA instead
(``jit(f).lower(...).compiler_ir("stablehlo")``), before any backend rewrites it.

What is counted, 2 FLOPs per multiply-add (the convention of ``layer_flops(convention="kit")``,
so compare with its ``"matmul_total"``):

* ``dot_general`` and ``dot``: ``2 · |result| · Π contracting sizes``;
* ``convolution``: ``2 · |result| · |kernel| / output features``, i.e. every window position
  times the input features of its group, padding included;
* cuDNN fused attention (``__cudnn$fmha*`` custom calls): forward ``2·B·H·T·S·(D + K)`` (``QKᵀ``
  and ``PV``), backward twice that (the four gradient matmuls; the kernel's recomputation of
  ``QKᵀ``, Dao et al. 2022, arXiv:2205.14135 Alg. 4, is not counted);
* ``func.call`` (remat, named calls, ``custom_vjp``, nested ``jit``): the callee per call site;
  ``while``: the body times a static trip count (else once, flagged); ``case``/``if``: the
  costliest branch (flagged when the branches differ).

Elementwise work, reductions, gathers and scatters are not counted. Any other custom call is
listed in ``uncounted``; all but annotations that move no data through a matmul (``Sharding``,
``MoveToHost``, ...) make the result unreliable, Pallas/Triton kernels included: pass
``custom_call_flops={target_prefix: fn(op) -> flops}`` to count them.

Rematerialisation: a ``jax.checkpoint``-ed backward pass re-runs forward matmuls, which execute
and are counted, so it exceeds the usual 3x forward; MFU conventions (PaLM App. B) leave the
recomputation out: divide by the convention's count, not this one, for MFU.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax._src.lib.mlir import ir

try:  # jax's name for the StableHLO dialect module; only its typed attribute readers are used
    from jax._src.lib.mlir.dialects import hlo as _HLO
except ImportError:
    _HLO = None

# Custom calls that annotate or move data and do no arithmetic: listed, but not a reason to
# distrust the count.
NO_MATMUL_CUSTOM_CALLS = ("Sharding", "annotate_device_placement", "MoveToHost", "MoveToDevice",
                          "LayoutConstraint", "X64Combine", "X64SplitLow", "X64SplitHigh")
# Hand-written kernels (Pallas: Triton or Mosaic GPU, Mosaic on TPU): opaque here.
KERNEL_CUSTOM_CALLS = ("__gpu$xla.gpu.triton", "triton_kernel_call", "mosaic_gpu",
                       "tpu_custom_call")
CUDNN_FMHA = "__cudnn$fmha"
CustomCallRule = Callable[[Any], float | None]


@dataclasses.dataclass(frozen=True)
class HloFlops:
    """Matmul FLOPs of one lowered program, with what makes the figure uncertain.

    Attributes:
      flops: the total (2 per multiply-add).
      by_op: FLOPs per op kind: ``"dot_general"``, ``"dot"``, ``"convolution"``,
        ``"custom_call:<target>"``.
      loops: ``(name, trip count or None)`` of every ``while``; bodies are multiplied by the trip
        count when it is known.
      uncounted: targets of the custom calls whose FLOPs are not in ``flops``.
      reliable: all trip counts known, no branch choice changed the count, and no uncounted
        custom call can hold matmuls.
      reason: why not, in words ("" when reliable).
      conds: ``(name, FLOPs of each branch)`` of every ``case``/``if``; ``flops`` has the largest.
    """

    flops: float
    by_op: dict[str, float]
    loops: tuple[tuple[str, int | None], ...]
    uncounted: tuple[str, ...]
    reliable: bool
    reason: str
    conds: tuple[tuple[str, tuple[float, ...]], ...] = ()


@dataclasses.dataclass
class _Tally:
    """What one block (or function) adds up to; merged into its caller's, scaled."""

    by_op: dict[str, float] = dataclasses.field(default_factory=dict)
    loops: list[tuple[str, int | None]] = dataclasses.field(default_factory=list)
    conds: list[tuple[str, tuple[float, ...]]] = dataclasses.field(default_factory=list)
    uncounted: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    total = property(lambda self: float(sum(self.by_op.values())))

    def count(self, op: str, flops: float) -> None:
        self.by_op[op] = self.by_op.get(op, 0.0) + flops

    def merge(self, other: _Tally, *, times: float = 1.0, flops: bool = True) -> None:
        """Add ``other`` run ``times`` times; with ``flops=False`` (a branch not taken) only what
        it leaves uncounted and why."""
        if flops:
            for op, value in other.by_op.items():
                self.count(op, times * value)
            self.loops += other.loops
            self.conds += other.conds
        self.uncounted += other.uncounted
        self.problems += other.problems


# Reading attributes: the typed wrappers (`stablehlo.DotDimensionNumbers`, ...) are used where the bundled bindings
# have them; otherwise the attribute's printed form is parsed, which StableHLO keeps stable
# (https://github.com/openxla/stablehlo/blob/main/docs/compatibility.md).


def dims_from_text(attr_text: str, field: str) -> tuple[int, ...]:
    """``field = [1, 2]`` from a printed attribute, e.g. ``lhs_contracting_dimensions`` of
    ``#stablehlo.dot<...>``; () when absent (StableHLO omits empty lists)."""
    match = re.search(rf"\b{field}\s*=\s*\[([^\]]*)\]", attr_text)
    if match is None:
        return ()
    return tuple(int(v) for v in match.group(1).replace(" ", "").split(",") if v)


def kernel_output_dim_from_text(attr_text: str) -> int | None:
    """The kernel's output-feature dimension from a printed ``#stablehlo.conv<...>``: the
    compact form ``[b, 0, 1, f]x[0, 1, i, o]->[...]`` or the verbose one."""
    match = re.search(r"kernel_output_feature_dimension\s*=\s*(\d+)", attr_text)
    if match is not None:
        return int(match.group(1))
    match = re.search(r"\]\s*x\s*\[([^\]]*)\]", attr_text)
    if match is None:
        return None
    labels = [v.strip() for v in match.group(1).split(",")]
    return labels.index("o") if "o" in labels else None


def _lhs_contracting(attr: Any) -> tuple[int, ...]:
    try:
        return tuple(_HLO.DotDimensionNumbers(attr).lhs_contracting_dimensions)
    except (AttributeError, TypeError, ValueError):
        return dims_from_text(str(attr), "lhs_contracting_dimensions")


def _kernel_output_dim(attr: Any) -> int | None:
    try:
        return int(_HLO.ConvDimensionNumbers(attr).kernel_output_feature_dimension)
    except (AttributeError, TypeError, ValueError):
        return kernel_output_dim_from_text(str(attr))


def _direction(attr: Any) -> str | None:
    try:
        return str(_HLO.ComparisonDirectionAttr(attr).value)
    except (AttributeError, TypeError, ValueError):
        match = re.search(r"comparison_direction\s+(\w+)", str(attr))
        return None if match is None else match.group(1)


def _string(attr: Any) -> str:
    for kind in (ir.StringAttr, ir.FlatSymbolRefAttr):
        try:
            return str(kind(attr).value)
        except (TypeError, ValueError):
            continue
    return str(attr).lstrip("@").strip('"')


def _int_value(attr: Any) -> int | None:
    """The integer of a scalar (or splat) ``dense<7> : tensor<i32>`` constant."""
    try:
        dense = ir.DenseIntElementsAttr(attr)
        return int(ir.IntegerAttr(dense.get_splat_value()).value) if dense.is_splat else None
    except (TypeError, ValueError, AttributeError):
        match = re.match(r"\s*dense<(-?\d+)>", str(attr))
        return None if match is None else int(match.group(1))


def _shape(value: Any) -> tuple[int, ...] | None:
    """Static shape of a tensor value, None when unranked or dynamic."""
    try:
        typ = ir.RankedTensorType(value.type)
    except (TypeError, ValueError):
        return None
    return tuple(int(d) for d in typ.shape) if typ.has_static_shape else None


def _kind(op: Any) -> str:
    """``stablehlo.dot_general`` -> ``dot_general`` (``mhlo.`` too); other dialects keep theirs."""
    name = op.operation.name
    dialect, _, short = name.partition(".")
    return short if dialect in ("stablehlo", "mhlo") else name


# --------------------------------------------------------------------------- per-op FLOPs


def _dot_general_flops(op: Any) -> float | None:
    lhs, out = _shape(op.operands[0]), _shape(op.results[0])
    if lhs is None or out is None or "dot_dimension_numbers" not in op.attributes:
        return None
    contracting = _lhs_contracting(op.attributes["dot_dimension_numbers"])
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contracting)


def _dot_flops(op: Any) -> float | None:
    lhs, out = _shape(op.operands[0]), _shape(op.results[0])  # contracts lhs's last dimension
    return None if lhs is None or out is None or not lhs else 2.0 * math.prod(out) * lhs[-1]


def _convolution_flops(op: Any) -> float | None:
    kernel, out = _shape(op.operands[1]), _shape(op.results[0])
    if kernel is None or out is None or "dimension_numbers" not in op.attributes:
        return None
    o = _kernel_output_dim(op.attributes["dimension_numbers"])
    if o is None:
        return None
    return 2.0 * math.prod(out) * math.prod(kernel) / kernel[o]


def _backend_config(op: Any) -> dict[str, Any]:
    if "backend_config" not in op.attributes:
        return {}
    try:
        config = json.loads(_string(op.attributes["backend_config"]))
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def cudnn_fmha_flops(op: Any) -> float | None:
    """FLOPs of a cuDNN fused-attention custom call (jax's ``dot_product_attention(...,
    implementation="cudnn")``): forward ``2·B·H·T·S·D + 2·B·H·T·S·K``, backward twice that.
    ``B, H, T, S`` come from the backend config's ``intermediate_tensor_shape`` (the ``BNTS``
    score matrix), D from the query's last axis and K from the value's (both layouts, ``BTNH``
    and ``BNTH``, keep the head dimension last). None when any of them is missing."""
    fmha = _backend_config(op).get("cudnn_fmha_backend_config", {})
    dims = fmha.get("intermediate_tensor_shape", {}).get("dimensions", ())
    query = _shape(op.operands[0]) if len(op.operands) >= 3 else None
    value = _shape(op.operands[2]) if len(op.operands) >= 3 else None
    if len(dims) != 4 or query is None or value is None:
        return None
    b, h, t, s = (int(d) for d in dims)
    forward = 2.0 * b * h * t * s * (query[-1] + value[-1])
    return 2.0 * forward if "Backward" in _string(op.attributes["call_target_name"]) else forward


# --------------------------------------------------------------------------- loop trip counts


def _block_arg(value: Any) -> Any:
    if isinstance(value, ir.BlockArgument):
        return value
    try:
        return ir.BlockArgument(value)
    except (TypeError, ValueError):
        return None


def _terminator(block: Any) -> Any:
    ops = list(block.operations)
    return ops[-1] if ops else None


def _is_loop_invariant(loop: Any, index: int) -> bool:
    """The body of ``loop`` passes carry ``index`` through unchanged."""
    body = loop.regions[1].blocks[0]
    term = _terminator(body)
    arg = None if term is None or index >= len(term.operands) else _block_arg(term.operands[index])
    return arg is not None and arg.arg_number == index and arg.owner == body


def _const_int(value: Any, depth: int = 0) -> int | None:
    """The integer a scalar value always holds: a constant (through converts and reshapes), or a
    loop-invariant carry of an enclosing ``while`` whose initial value is one."""
    if depth > 16:
        return None
    arg = _block_arg(value)
    if arg is not None:
        parent = arg.owner.owner
        if parent is None or _kind(parent) != "while":
            return None
        j = arg.arg_number
        if not _is_loop_invariant(parent, j):
            return None
        return _const_int(parent.operands[j], depth + 1)
    op = value.owner
    kind = _kind(op)
    if kind == "constant" and "value" in op.attributes:
        return _int_value(op.attributes["value"])
    if kind in ("convert", "reshape", "broadcast_in_dim") and len(op.operands) == 1:
        return _const_int(op.operands[0], depth + 1)
    return None


_FLIP = {"LT": "GT", "GT": "LT", "LE": "GE", "GE": "LE", "NE": "NE", "EQ": "EQ"}


def _trips(start: int, step: int, limit: int, direction: str) -> int | None:
    """Iterations of ``for (i = start; i <direction> limit; i += step)``; None if unbounded."""
    if direction == "LT":
        return max(0, -((start - limit) // step)) if step > 0 else (0 if start >= limit else None)
    if direction == "LE":
        return max(0, (limit - start) // step + 1) if step > 0 else (0 if start > limit else None)
    if direction in ("GT", "GE"):
        return _trips(-start, -step, -limit, "LT" if direction == "GT" else "LE")
    if direction == "NE" and step != 0 and (limit - start) % step == 0:
        n = (limit - start) // step
        return n if n >= 0 else None
    return None


def trip_count(loop: Any) -> int | None:
    """Static trip count of a ``stablehlo.while``: its condition compares a carried counter with
    a constant (jax's ``lax.scan`` counts ``0 < length``; ``fori_loop``/``while_loop`` may start
    elsewhere), the counter starts at a constant and the body adds a constant to it."""
    cond = loop.regions[0].blocks[0]
    term = _terminator(cond)
    if term is None or len(term.operands) != 1 or _block_arg(term.operands[0]) is not None:
        return None
    compare = term.operands[0].owner
    if _kind(compare) != "compare" or len(compare.operands) != 2:
        return None
    direction = _direction(compare.attributes["comparison_direction"])
    lhs, rhs = (_block_arg(v) for v in compare.operands)
    if lhs is not None and lhs.owner == cond:
        counter, limit = lhs.arg_number, compare.operands[1]
    elif rhs is not None and rhs.owner == cond and direction is not None:
        counter, limit, direction = rhs.arg_number, compare.operands[0], _FLIP[direction]
    else:
        return None
    body = loop.regions[1].blocks[0]
    update = _terminator(body).operands[counter]
    if _block_arg(update) is not None or _kind(update.owner) not in ("add", "subtract"):
        return None
    a, b = update.owner.operands
    sign = 1 if _kind(update.owner) == "add" else -1
    a_arg, b_arg = _block_arg(a), _block_arg(b)
    if a_arg is not None and a_arg.owner == body and a_arg.arg_number == counter:
        step = _const_int(b)
    elif sign == 1 and b_arg is not None and b_arg.owner == body and b_arg.arg_number == counter:
        step = _const_int(a)
    else:
        return None
    start, stop = _const_int(loop.operands[counter]), _const_int(limit)
    if step is None or start is None or stop is None or direction is None or step == 0:
        return None
    return _trips(start, sign * step, stop, direction)


# --------------------------------------------------------------------------- the walk


@dataclasses.dataclass
class _Walk:
    functions: dict[str, Any]
    rules: list[tuple[str, CustomCallRule]]
    memo: dict[str, _Tally] = dataclasses.field(default_factory=dict)
    active: set[str] = dataclasses.field(default_factory=set)


def _function(walk: _Walk, name: str) -> _Tally:
    if name in walk.memo:
        return walk.memo[name]
    tally = _Tally()
    if name not in walk.functions or name in walk.active:
        tally.problems.append(f"call to @{name}: "
                              + ("recursive" if name in walk.active else "no such function"))
        return tally
    walk.active.add(name)
    for region in walk.functions[name].regions:
        for block in region.blocks:
            _block(walk, block, name, tally, itertools.count())
    walk.active.discard(name)
    walk.memo[name] = tally
    return tally


def _custom_call(walk: _Walk, op: Any, tally: _Tally) -> None:
    target = _string(op.attributes["call_target_name"])
    rule = next((fn for prefix, fn in walk.rules if target.startswith(prefix)), None)
    flops = None if rule is None else rule(op)
    if flops is not None:
        tally.count(f"custom_call:{target}", float(flops))
        return
    tally.uncounted.append(target)
    if rule is not None:
        tally.problems.append(f"custom call {target}: its FLOP rule could not read the op")
    elif target.startswith(KERNEL_CUSTOM_CALLS):
        tally.problems.append(f"custom call {target} (a Pallas/Triton/Mosaic kernel) not counted")
    elif not target.startswith(NO_MATMUL_CUSTOM_CALLS):
        tally.problems.append(f"custom call {target} not counted")


def _block(walk: _Walk, block: Any, path: str, tally: _Tally, counter: Any) -> None:
    for op in block.operations:
        kind = _kind(op)
        rule = {"dot_general": _dot_general_flops, "dot": _dot_flops,
                "convolution": _convolution_flops}.get(kind)
        if rule is not None:
            flops = rule(op)
            if flops is None:
                tally.problems.append(f"{kind} with unreadable shapes or dimensions not counted")
            else:
                tally.count(kind, flops)
        elif kind in ("func.call", "call"):
            callee = _string(op.attributes["callee"])
            tally.merge(_function(walk, callee))
        elif kind == "composite" and "decomposition" in op.attributes:
            callee = _string(op.attributes["decomposition"])
            tally.merge(_function(walk, callee))
        elif kind == "custom_call":
            _custom_call(walk, op, tally)
        elif kind == "while":
            name = f"{path}/while#{next(counter)}"
            trips = trip_count(op)
            cond, body = _Tally(), _Tally()
            _block(walk, op.regions[0].blocks[0], name, cond, counter)
            _block(walk, op.regions[1].blocks[0], name, body, counter)
            tally.loops.append((name, trips))
            if trips is None:
                tally.problems.append(f"{name}: trip count not static, body counted once")
            tally.merge(body, times=1.0 if trips is None else float(trips))
            tally.merge(cond, times=1.0 if trips is None else float(trips + 1))
        elif kind in ("case", "if"):
            name = f"{path}/{kind}#{next(counter)}"
            branches = []
            for region in op.regions:
                branch = _Tally()
                for inner in region.blocks:
                    _block(walk, inner, name, branch, counter)
                branches.append(branch)
            totals = tuple(b.total for b in branches)
            costliest = max(range(len(branches)), key=lambda i: totals[i], default=None)
            for i, branch in enumerate(branches):
                tally.merge(branch, flops=i == costliest)
            tally.conds.append((name, totals))
            if len(set(totals)) > 1:
                tally.problems.append(f"{name}: branches differ ("
                                      + ", ".join(f"{t:.6g}" for t in totals)
                                      + " FLOPs), counted the costliest")
        elif op.regions:
            if kind == "sdy.manual_computation":
                tally.problems.append("shard_map body counted once, with one device's shapes")
            for region in op.regions:
                for inner in region.blocks:
                    _block(walk, inner, path, tally, counter)


def stablehlo_cost(module: Any, *,
                   custom_call_flops: Mapping[str, CustomCallRule] | None = None) -> HloFlops:
    """Count an MLIR module (``Lowered.compiler_ir("stablehlo")``) or its text, parsed with jax's
    dialects. ``custom_call_flops`` maps call-target prefixes to ``fn(op) -> FLOPs or None``;
    it takes precedence over the built-in cuDNN attention rule."""
    if isinstance(module, str):
        from jax._src.interpreters import mlir as jax_mlir

        with jax_mlir.make_ir_context():
            return stablehlo_cost(ir.Module.parse(module), custom_call_flops=custom_call_flops)
    if not isinstance(module, ir.Module):
        raise TypeError("stablehlo_cost(module=...) expects an MLIR Module or its text, got "
                        f"{type(module).__name__}")
    functions = {}
    for op in module.body.operations:
        if op.operation.name == "func.func":
            functions[_string(op.attributes["sym_name"])] = op
    public = [name for name, op in functions.items() if "sym_visibility" not in op.attributes
              or _string(op.attributes["sym_visibility"]) == "public"]
    entry = "main" if "main" in functions else (public[0] if public else None)
    if entry is None:
        raise ValueError(f"stablehlo_cost(module=...): no public function, got {list(functions)}")
    rules = sorted({**{CUDNN_FMHA: cudnn_fmha_flops}, **dict(custom_call_flops or {})}.items(),
                   key=lambda item: -len(item[0]))
    tally = _function(_Walk(functions, rules), entry)
    problems = list(dict.fromkeys(tally.problems))
    return HloFlops(flops=tally.total, by_op=dict(tally.by_op), loops=tuple(tally.loops),
                    uncounted=tuple(dict.fromkeys(tally.uncounted)), reliable=not problems,
                    reason="; ".join(problems), conds=tuple(tally.conds))


def hlo_cost(lowered: Any, *,
             custom_call_flops: Mapping[str, CustomCallRule] | None = None) -> HloFlops:
    """Matmul FLOPs of a lowered function (``jax.jit(f).lower(*args)``), from its StableHLO
    without compiling (module doc)."""
    if not isinstance(lowered, jax.stages.Lowered):
        hint = (" (call it before .compile(), or use xla_cost for a Compiled)"
                if isinstance(lowered, jax.stages.Compiled) else "")
        raise TypeError("hlo_cost(lowered=...) expects a jax.stages.Lowered, i.e. "
                        f"jax.jit(f).lower(*args), got {type(lowered).__name__}{hint}")
    return stablehlo_cost(lowered.compiler_ir("stablehlo"), custom_call_flops=custom_call_flops)


def hlo_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> HloFlops:
    """:func:`hlo_cost` of ``jax.jit(fn).lower(*args)`` (arrays or ShapeDtypeStructs)."""
    return hlo_cost(jax.jit(fn).lower(*args, **kwargs))
