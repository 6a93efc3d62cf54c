"""`jaxformer.hlo_flops`: matmul FLOPs of the lowered StableHLO against closed forms and the
analytic layer model (`layer_flops`), through calls, loops, conds, remat and custom calls.

Every expected number is a closed form or `layer_flops`, never the code under test's own output.
Apart from one tiny encoder (compiled once for XLA's flag), nothing here compiles or runs: the
count needs only the lowering.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxformer import hlo_flops as hf
from jaxformer.flops import LayerShape, hlo_cost, hlo_flops, layer_flops, stablehlo_cost, xla_cost

BAND = 0.02  # P3: analytic and counted FLOPs agree within ±2%
B, E, F = 4, 32, 48
MATMUL = 2 * B * E * F  # one [B, E] @ [E, F]


def _x_w(f: int = F):
    return jnp.ones((B, E)), jnp.ones((E, f))


def test_single_matmul_is_2mnk():
    a, b = jnp.ones((96, 200)), jnp.ones((200, 56))
    cost = hlo_flops(jnp.matmul, a, b)
    assert cost.flops == 2 * 96 * 200 * 56 and cost.by_op == {"dot_general": 2 * 96 * 200 * 56}
    assert cost.reliable and cost.reason == "" and cost.loops == () and cost.uncounted == ()


def test_batched_einsums_count_batch_dims_once():
    b, h, t, s, d = 2, 3, 5, 7, 4
    q, k = jnp.ones((b, h, t, d)), jnp.ones((b, h, s, d))
    assert hlo_flops(lambda q, k: jnp.einsum("bhtd,bhsd->bhts", q, k), q, k).flops == \
        2 * b * h * t * s * d
    # Two contracting dimensions (h and d), one batch dimension.
    x, y = jnp.ones((b, t, h, d)), jnp.ones((b, h, d, s))
    assert hlo_flops(lambda x, y: jnp.einsum("bthd,bhds->bts", x, y), x, y).flops == \
        2 * b * t * s * h * d


@pytest.mark.parametrize(("stride", "padding", "groups", "out_hw"),
                         [(1, "SAME", 1, 9), (2, "VALID", 1, 4), (1, "SAME", 2, 9)])
def test_convolution_is_2_out_window_cin_per_group(stride, padding, groups, out_hw):
    n, hw, c_in, c_out, kh = 2, 9, 6, 4, 3
    img, ker = jnp.ones((n, hw, hw, c_in)), jnp.ones((kh, kh, c_in // groups, c_out))

    def conv(img, ker):
        return jax.lax.conv_general_dilated(img, ker, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=groups)

    cost = hlo_flops(conv, img, ker)
    assert cost.by_op == {"convolution": 2 * n * out_hw * out_hw * c_out * kh * kh * c_in / groups}


def _bert_layer(attention: str = "softmax"):
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Block

    cfg = EncoderConfig(hidden_size=768, num_heads=12, intermediate_size=3072, num_layers=1,
                        attention=attention, attention_dropout=0.0, linear_mode="parallel")
    # Abstract parameters: lowering needs shapes only, so BERT-base is never initialised.
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Block(cfg, rngs=nnx.Rngs(0))))

    def forward(params, x):
        return nnx.merge(graphdef, params)(x, mask=None, deterministic=True)

    return forward, params, jax.ShapeDtypeStruct((1, 128, 768), jnp.float32)


def _loss(y):
    return 0.5 * jnp.sum(y * y)  # needs y in the backward pass, so no forward dot is dead code


def test_bert_base_layer_forward_and_backward_match_the_analytic_count():
    forward, params, x = _bert_layer()
    shape = LayerShape(768, 12, 3072, 128)
    fwd = hlo_flops(forward, params, x)
    want = layer_flops(shape)["matmul_total"]
    assert fwd.reliable and abs(fwd.flops / want - 1) <= BAND
    assert fwd.flops == want  # exact: every dot of the layer is in the table
    grad = jax.grad(lambda p, x: _loss(forward(p, x)), argnums=(0, 1))
    both = hlo_flops(grad, params, x)
    want = layer_flops(shape, training=True)["matmul_total"]
    assert both.reliable and abs(both.flops / want - 1) <= BAND
    assert both.flops == want  # exact: each forward dot has a dX and a dW of its cost
    # The residual of the 3x rule: without the input's gradient the first projection's dX
    # (2·T·E·3E) is not computed.
    params_only = hlo_flops(jax.grad(lambda p, x: _loss(forward(p, x))), params, x)
    assert params_only.flops == want - 2 * 128 * 768 * 3 * 768


def test_linear_attention_layer_matches_the_analytic_count():
    forward, params, x = _bert_layer("linear")
    want = layer_flops(LayerShape(768, 12, 3072, 128, attention="linear",
                                  linear_mode="parallel"))["matmul_total"]
    assert abs(hlo_flops(forward, params, x).flops / want - 1) <= BAND


def test_scan_fori_map_and_while_multiply_the_body():
    x, w = _x_w(E)
    body = 2 * B * E * E
    scan = hlo_flops(lambda x, w: jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=4)[0],
                     x, w)
    assert scan.flops == 4 * body and scan.reliable and [t for _, t in scan.loops] == [4]
    fori = hlo_flops(lambda x, w: jax.lax.fori_loop(0, 4, lambda i, c: jnp.tanh(c @ w), x), x, w)
    assert fori.flops == 4 * body and fori.reliable
    # A while loop whose counter starts at 2 (the start value comes from outside the loop).
    loop = hlo_flops(lambda x, w: jax.lax.while_loop(
        lambda c: c[0] < 6, lambda c: (c[0] + 1, c[1] @ w), (2, x))[1], x, w)
    assert loop.flops == 4 * body and loop.loops[0][1] == 4
    # lax.map: one [E] @ [E, E] per row, B rows.
    rows = hlo_flops(lambda x, w: jax.lax.map(lambda r: r @ w, x), x, w)
    assert rows.flops == B * 2 * E * E and rows.loops[0][1] == B
    # Nested, and unrolled (7 = 3 iterations of 2 copies + a remainder of 1).
    nested = hlo_flops(lambda x, w: jax.lax.scan(
        lambda c, _: (jax.lax.scan(lambda d, _: (d @ w, None), c, None, length=4)[0], None),
        x, None, length=3)[0], x, w)
    assert nested.flops == 12 * body and sorted(t for _, t in nested.loops) == [3, 4]
    unrolled = hlo_flops(lambda x, w: jax.lax.scan(lambda c, _: (c @ w, None), x, None,
                                                   length=7, unroll=2)[0], x, w)
    assert unrolled.flops == 7 * body


def test_loop_with_unknown_trip_count_is_counted_once_and_flagged():
    x, w = _x_w(E)
    cost = hlo_flops(lambda x, w, n: jax.lax.fori_loop(0, n, lambda i, c: c @ w, x), x, w, 4)
    assert cost.flops == 2 * B * E * E and not cost.reliable
    assert cost.loops == (("main/while#0", None),)
    assert "main/while#0: trip count not static, body counted once" in cost.reason


def test_remat_counts_the_recomputed_forward():
    x, w1, w2 = jnp.ones((B, E)), jnp.ones((E, F)), jnp.ones((F, E))

    def f(w1, w2, x):
        return jnp.tanh(x @ w1) @ w2

    # Forward x@w1 and h@w2; backward dW2 = hᵀdy, dh = dy w2ᵀ, dW1 = xᵀdh: five of one cost.
    plain = hlo_flops(jax.grad(lambda w1, w2, x: _loss(f(w1, w2, x)), argnums=(0, 1)), w1, w2, x)
    assert plain.flops == 5 * MATMUL
    # Under jax.checkpoint the backward pass recomputes h = tanh(x@w1), one more matmul.
    remat = hlo_flops(jax.grad(lambda w1, w2, x: _loss(jax.checkpoint(f)(w1, w2, x)),
                               argnums=(0, 1)), w1, w2, x)
    assert remat.flops == 6 * MATMUL and remat.reliable


def test_calls_count_once_per_call_site():
    x, w = _x_w()
    named = jax.jit(lambda x, w: x @ w)  # a nested jit lowers to a private function
    cost = hlo_flops(lambda x, w: named(x, w) + named(2 * x, w), x, w)
    assert cost.flops == 2 * MATMUL


def test_cond_counts_the_costliest_branch_and_says_so():
    x, w = _x_w(E)
    body = 2 * B * E * E
    cost = hlo_flops(lambda p, x, w: jax.lax.cond(p, lambda: x @ w, lambda: (x @ w) @ w),
                     True, x, w)
    assert cost.flops == 2 * body and not cost.reliable
    # lax.cond's case op lists the false branch first.
    assert [branches for _, branches in cost.conds] == [(2 * body, body)]
    assert "counted the costliest" in cost.reason
    same = hlo_flops(lambda p, x, w: jax.lax.cond(p, lambda: x @ w, lambda: jnp.tanh(x) @ w),
                     True, x, w)
    assert same.flops == body and same.reliable


def test_encoder_scan_layers_counts_like_the_unrolled_stack():
    from jaxformer.models import Encoder
    from jaxformer.models.config import EncoderConfig

    layers, batch, tokens = 3, 2, 16
    ids = jax.ShapeDtypeStruct((batch, tokens), jnp.int32)
    costs = {}
    for scan in (False, True):
        cfg = EncoderConfig.tiny(num_layers=layers, scan_layers=scan)
        graphdef, params = nnx.split(Encoder(cfg, rngs=nnx.Rngs(0)))

        def forward(params, ids, graphdef=graphdef):
            return nnx.merge(graphdef, params)(ids, deterministic=True)

        lowered = jax.jit(forward).lower(params, ids)
        costs[scan] = hlo_cost(lowered)
        if scan:
            xla = xla_cost(lowered.compile())
            assert not xla.reliable and [t for _, t in xla.loops] == [layers]
    e, h, f = cfg.hidden_size, cfg.num_heads, cfg.intermediate_size
    # L layers and the pooler's dense on the [CLS] rows; the embedding lookup is a gather.
    want = (layers * layer_flops(LayerShape(e, h, f, tokens, batch=batch))["matmul_total"]
            + 2 * batch * e * e)
    assert costs[False].flops == want and costs[False].loops == ()
    assert costs[True].flops == want and [t for _, t in costs[True].loops] == [layers]
    assert costs[True].reliable


# Handwritten StableHLO: cuDNN fused attention (forward and backward, as jax's cuDNN lowering
# emits them: B=2, T=128, S=256, H=4, D=64, K=32, BTNH inputs), a Pallas/Triton kernel, a library
# GEMM this module knows nothing about, and a sharding annotation.
CUSTOM_CALLS = r"""
module @jit_attention {
  func.func public @main(%q: tensor<2x128x4x64xbf16>, %k: tensor<2x256x4x64xbf16>,
                         %v: tensor<2x256x4x32xbf16>, %do: tensor<2x128x4x32xbf16>,
                         %a: tensor<8x16xf32>) -> (tensor<2x4x128x64xbf16>, tensor<8x8xf32>) {
    %o:3 = stablehlo.custom_call @__cudnn$fmhaSoftmax(%q, %k, %v) {api_version = 2 : i32, backend_config = "{\22operation_queue_id\22: \220\22, \22cudnn_fmha_backend_config\22: {\22fmha_scale\22: 0.125, \22intermediate_tensor_shape\22: {\22dimensions\22: [\222\22, \224\22, \22128\22, \22256\22]}, \22mask_type\22: \22NO_MASK\22}}"} : (tensor<2x128x4x64xbf16>, tensor<2x256x4x64xbf16>, tensor<2x256x4x32xbf16>) -> (tensor<2x4x128x32xbf16>, tensor<2x4x128xf32>, tensor<0xui8>)
    %g:4 = stablehlo.custom_call @__cudnn$fmhaSoftmaxBackward(%q, %k, %v, %o#1, %do, %do) {api_version = 2 : i32, backend_config = "{\22cudnn_fmha_backend_config\22: {\22intermediate_tensor_shape\22: {\22dimensions\22: [\222\22, \224\22, \22128\22, \22256\22]}}}"} : (tensor<2x128x4x64xbf16>, tensor<2x256x4x64xbf16>, tensor<2x256x4x32xbf16>, tensor<2x4x128xf32>, tensor<2x128x4x32xbf16>, tensor<2x128x4x32xbf16>) -> (tensor<2x4x128x64xbf16>, tensor<2x4x256x64xbf16>, tensor<2x4x256x32xbf16>, tensor<0xui8>)
    %t = stablehlo.custom_call @__gpu$xla.gpu.triton(%a) {api_version = 4 : i32} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %s = stablehlo.custom_call @Sharding(%t) : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %m = stablehlo.custom_call @my_lib_gemm(%s, %s) : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x8xf32>
    return %g#0, %m : tensor<2x4x128x64xbf16>, tensor<8x8xf32>
  }
}
"""


def test_cudnn_attention_is_counted_and_unknown_custom_calls_are_listed():
    bh_ts = 2 * 4 * 128 * 256
    forward = 2 * bh_ts * 64 + 2 * bh_ts * 32  # QKᵀ and PV
    cost = stablehlo_cost(CUSTOM_CALLS)
    assert cost.by_op == {"custom_call:__cudnn$fmhaSoftmax": forward,
                          "custom_call:__cudnn$fmhaSoftmaxBackward": 2 * forward}
    assert cost.flops == 3 * forward
    assert cost.uncounted == ("__gpu$xla.gpu.triton", "Sharding", "my_lib_gemm")
    assert not cost.reliable
    assert "__gpu$xla.gpu.triton (a Pallas/Triton/Mosaic kernel) not counted" in cost.reason
    assert "my_lib_gemm not counted" in cost.reason and "Sharding" not in cost.reason
    # A caller's rule, by target prefix, for the kernels this module cannot see into.
    rules = {"my_lib": lambda op: 2.0 * 8 * 8 * 16, "__gpu$xla.gpu.triton": lambda op: 0.0}
    ruled = stablehlo_cost(CUSTOM_CALLS, custom_call_flops=rules)
    assert ruled.flops == 3 * forward + 2 * 8 * 8 * 16
    assert ruled.uncounted == ("Sharding",) and ruled.reliable, ruled.reason
    # Without the backend config the score shape is unknown: listed, not guessed.
    bare = stablehlo_cost(CUSTOM_CALLS.replace("backend_config", "other_config"))
    assert bare.flops == 0 and "__cudnn$fmhaSoftmax" in bare.uncounted
    assert "its FLOP rule could not read the op" in bare.reason


# A count-down loop with the counter on the right of the comparison (0 < i, i = 10, 8, ..., 2:
# 5 trips) and an inclusive one (i = 1..4: 4 trips), plus a legacy `stablehlo.dot`.
LOOPS = r"""
module @jit_loops {
  func.func public @main(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
    %ten = stablehlo.constant dense<10> : tensor<i32>
    %down:2 = stablehlo.while(%i = %ten, %c = %x) : tensor<i32>, tensor<4x8xf32>
    cond {
      %zero = stablehlo.constant dense<0> : tensor<i32>
      %p = stablehlo.compare LT, %zero, %i, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      stablehlo.return %p : tensor<i1>
    } do {
      %two = stablehlo.constant dense<2> : tensor<i32>
      %j = stablehlo.subtract %i, %two : tensor<i32>
      %d = stablehlo.dot %c, %w : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
      stablehlo.return %j, %d : tensor<i32>, tensor<4x8xf32>
    }
    %one = stablehlo.constant dense<1> : tensor<i32>
    %up:2 = stablehlo.while(%i = %one, %c = %down#1) : tensor<i32>, tensor<4x8xf32>
    cond {
      %four = stablehlo.constant dense<4> : tensor<i32>
      %p = stablehlo.compare LE, %i, %four, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      stablehlo.return %p : tensor<i1>
    } do {
      %step = stablehlo.constant dense<1> : tensor<i32>
      %j = stablehlo.add %step, %i : tensor<i32>
      %d = stablehlo.dot_general %c, %w, contracting_dims = [1] x [0] : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
      stablehlo.return %j, %d : tensor<i32>, tensor<4x8xf32>
    }
    return %up#1 : tensor<4x8xf32>
  }
}
"""


def test_trip_counts_from_text_in_both_directions():
    cost = stablehlo_cost(LOOPS)
    assert [t for _, t in cost.loops] == [5, 4]
    assert cost.by_op == {"dot": 5 * 2 * 4 * 8 * 8, "dot_general": 4 * 2 * 4 * 8 * 8}
    assert cost.reliable


def test_printed_attribute_fallback(monkeypatch):
    # Without the typed attribute readers of the bundled bindings, the printed forms are parsed.
    assert hf.dims_from_text("#stablehlo.dot<lhs_batching_dimensions = [0], rhs_batching_"
                             "dimensions = [0], lhs_contracting_dimensions = [2, 3], rhs_contra"
                             "cting_dimensions = [1, 2]>", "lhs_contracting_dimensions") == (2, 3)
    assert hf.dims_from_text("#stablehlo.dot<>", "lhs_batching_dimensions") == ()
    assert hf.kernel_output_dim_from_text("#stablehlo.conv<[b, 0, 1, f]x[o, i, 0, 1]->"
                                          "[b, f, 0, 1]>") == 0
    assert hf.kernel_output_dim_from_text("#stablehlo.conv<raw input_batch_dimension = 0, "
                                          "kernel_output_feature_dimension = 3>") == 3
    monkeypatch.setattr(hf, "_HLO", None)
    img, ker = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    conv = hlo_flops(lambda i, k: jax.lax.conv_general_dilated(
        i, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")), img, ker)
    assert conv.flops == 2 * 1 * 3 * 3 * 4 * 3 * 3 * 2
    x, w = _x_w(E)
    scan = hlo_flops(lambda x, w: jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=3)[0],
                     x, w)
    assert scan.flops == 3 * 2 * B * E * E and scan.loops[0][1] == 3


def test_bad_input_names_the_argument_and_types():
    with pytest.raises(TypeError, match=r"hlo_cost\(lowered=\.\.\.\) expects a jax\.stages\."
                       r"Lowered.*got ArrayImpl"):
        hlo_cost(jnp.ones(3))
    compiled = jax.jit(jnp.sin).lower(1.0).compile()
    with pytest.raises(TypeError, match=r"got Compiled \(call it before \.compile\(\)"):
        hlo_cost(compiled)
    with pytest.raises(TypeError, match=r"stablehlo_cost\(module=\.\.\.\) expects an MLIR Module "
                       r"or its text, got int"):
        stablehlo_cost(3)
