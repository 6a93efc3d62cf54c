"""`jaxformer.initializers` and `jaxformer.pytree` against independent references.

References: float64 integrals from `scipy.integrate.quad` (γ, E[sigmoid²], the SELU moment
conditions), post 8620's printed digits, the constants `jax.nn.selu` uses, and draws from
`jax.nn.initializers` and `torch.nn.init.trunc_normal_`.

Sampling tolerances: every moment check uses ≥ 1e6 draws and 5 standard errors computed from
the sample itself (se(mean) = s/√n, se(var) = √((m4 − var²)/n)), so a correct sampler fails a
given check with probability < 1e-6; the keys are fixed, so the outcome is deterministic.
"""

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st
from scipy import integrate, special, stats

from jaxformer import initializers as I
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.pytree import named_leaves, path_name

GAMMA = I.TRUNCATED_NORMAL_GAMMA
BIG = (1000, 1000)  # 1e6 draws
WIDE = (500, 2000)  # 1e6 draws with fan_in 500, fan_out 2000, fan_avg 1250: modes differ


def assert_moments(x, *, mean: float, var: float) -> None:
    """|mean − target| < 5 se(mean) and |var − target| < 5 se(var), se from the sample."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    m = x.mean()
    d = x - m
    v = np.mean(d**2)
    m4 = np.mean(d**4)
    se_mean = math.sqrt(v / n)
    se_var = math.sqrt((m4 - v * v) / n)
    assert abs(m - mean) < 5 * se_mean, (m, mean, se_mean)
    assert abs(v - var) < 5 * se_var, (v, var, se_var)


def assert_bounded(x, limit: float) -> None:
    """All |x| ≤ limit (1 float32 ulp of slack for the final multiply) and the edge is reached:
    with 1e6 draws, thousands fall in the last 1% below the limit for these distributions."""
    top = float(np.max(np.abs(np.asarray(x, np.float64))))
    assert top <= limit * (1 + 1e-6), (top, limit)
    assert top >= 0.99 * limit, (top, limit)


def keys(n: int) -> list[jax.Array]:
    return [jax.random.fold_in(jax.random.key(20240620), i) for i in range(n)]


# --------------------------------------------------------------------------- constants


def _gamma_quad(a: float) -> float:
    num = integrate.quad(lambda x: x * x * math.exp(-0.5 * x * x), -a, a, epsabs=1e-14,
                         epsrel=1e-13)[0]
    den = integrate.quad(lambda x: math.exp(-0.5 * x * x), -a, a, epsabs=1e-14, epsrel=1e-13)[0]
    return num / den


@pytest.mark.parametrize("bound", [0.5, 1.0, 2.0, 3.0])
def test_truncated_normal_variance_matches_quadrature(bound):
    assert abs(I.truncated_normal_variance(bound) - _gamma_quad(bound)) < 1e-10
    # a second, independent reference: scipy's truncated normal distribution
    assert abs(I.truncated_normal_variance(bound) - stats.truncnorm(-bound, bound).var()) < 1e-10


def test_truncated_normal_constants_match_post_and_jax():
    assert abs(GAMMA - _gamma_quad(2.0)) < 1e-10
    assert abs(I.TRUNCATED_NORMAL_CORRECTION - 1 / math.sqrt(_gamma_quad(2.0))) < 1e-10
    # post 8620 prints 0.7737413 and 1.1368472
    assert f"{GAMMA:.7f}" == "0.7737413"
    assert f"{I.TRUNCATED_NORMAL_CORRECTION:.7f}" == "1.1368472"
    # jax's variance_scaling divides by this hard-coded √γ
    assert abs(math.sqrt(GAMMA) - 0.87962566103423978) < 1e-15


# --------------------------------------------------------------------------- distributions


def test_normal_moments():
    k1, k2 = keys(2)
    assert_moments(I.normal(0.02)(k1, BIG), mean=0.0, var=0.02**2)
    assert_moments(I.normal(0.5, mean=1.0)(k2, BIG), mean=1.0, var=0.25)


def test_uniform_moments_and_support():
    x = I.uniform(0.3)(keys(1)[0], BIG)
    assert_moments(x, mean=0.0, var=0.09)
    assert_bounded(x, math.sqrt(3) * 0.3)


@pytest.mark.parametrize("corrected", [True, False])
def test_truncated_normal_moments_and_support(corrected):
    std = 0.02
    x = I.truncated_normal(std, corrected=corrected)(keys(1)[0], BIG)
    var = std**2 if corrected else GAMMA * std**2
    scale = std / math.sqrt(GAMMA) if corrected else std  # std of the normal before truncation
    assert_moments(x, mean=0.0, var=var)
    assert_bounded(x, 2 * scale)


def test_truncated_normal_other_bound():
    x = I.truncated_normal(1.0, bound=1.0)(keys(1)[0], BIG)
    assert_moments(x, mean=0.0, var=1.0)
    assert_bounded(x, 1.0 / math.sqrt(I.truncated_normal_variance(1.0)))


@pytest.mark.parametrize("mode", I.MODES)
@pytest.mark.parametrize("distribution", I.DISTRIBUTIONS)
def test_variance_scaling_moments(mode, distribution):
    n = {"fan_in": 500, "fan_out": 2000, "fan_avg": 1250}[mode]
    var = 2.0 / n
    x = I.variance_scaling(2.0, mode, distribution)(keys(1)[0], WIDE)
    assert_moments(x, mean=0.0, var=var)
    if distribution == "uniform":
        assert_bounded(x, math.sqrt(3 * var))
    elif distribution == "truncated_normal":
        assert_bounded(x, 2 * math.sqrt(var / GAMMA))


@pytest.mark.parametrize("name,var", [("lecun", 1 / 500), ("he", 2 / 500),
                                      ("xavier", 2 / (500 + 2000))])
def test_named_schemes(name, var):
    x = getattr(I, name)()(keys(1)[0], WIDE)
    assert_moments(x, mean=0.0, var=var)


# --------------------------------------------------------------------------- other frameworks


def test_jax_truncated_normal_is_uncorrected_and_variance_scaling_is_corrected():
    k1, k2, k3 = keys(3)
    std = 0.02
    theirs = jax.nn.initializers.truncated_normal(stddev=std)(k1, BIG, jnp.float32)
    assert_moments(theirs, mean=0.0, var=GAMMA * std**2)  # std 0.8796σ, not σ
    assert_moments(I.truncated_normal(std, corrected=False)(k2, BIG), mean=0.0,
                   var=GAMMA * std**2)
    vs = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    assert_moments(vs(k3, WIDE, jnp.float32), mean=0.0, var=1 / 500)  # corrected
    assert_moments(I.variance_scaling(1.0, "fan_in", "truncated_normal")(k3, WIDE), mean=0.0,
                   var=1 / 500)


def test_torch_trunc_normal_is_uncorrected():
    torch = pytest.importorskip("torch")
    std = 0.02
    gen = torch.Generator().manual_seed(0)
    t = torch.empty(BIG, dtype=torch.float64)
    torch.nn.init.trunc_normal_(t, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=gen)
    assert_moments(t.numpy(), mean=0.0, var=GAMMA * std**2)


def test_fans_arithmetic():
    assert I.fans((7, 5)) == (7, 5)
    assert I.fans((3, 3, 16, 32)) == (3 * 3 * 16, 3 * 3 * 32)
    assert I.fans((32, 3, 3, 16), in_axis=-1, out_axis=0) == (16 * 9, 32 * 9)
    assert I.fans((2, 5, 7), in_axis=0, out_axis=1) == (2 * 7, 5 * 7)


@pytest.mark.parametrize("shape", [WIDE, (3, 3, 64, 128)], ids=["dense", "conv"])
@pytest.mark.parametrize("mode", I.MODES)
def test_fans_match_jax_convention(shape, mode):
    # A uniform variance_scaling draw lies in ±√(3/n) and reaches its edge (≥ 7e4 draws put
    # ~70 within 0.1% of it), so jax's max |x| pins the n it used to ±0.2%.
    fan_in, fan_out = I.fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    limit = math.sqrt(3 / n)
    k1, k2 = keys(2)
    theirs = jax.nn.initializers.variance_scaling(1.0, mode, "uniform")(k1, shape, jnp.float32)
    ours = I.variance_scaling(1.0, mode, "uniform")(k2, shape)
    for x in (theirs, ours):
        top = float(jnp.max(jnp.abs(x)))
        assert 0.999 * limit <= top <= limit * (1 + 1e-6), (top, limit)
    if shape == WIDE:  # enough draws for the variance itself
        assert_moments(jax.nn.initializers.variance_scaling(1.0, mode, "normal")(
            k1, shape, jnp.float32), mean=0.0, var=1 / n)


# --------------------------------------------------------------------------- activations


def test_gaussian_expectation_is_exact_on_moments():
    for power, moment in [(0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0), (3, 0.0)]:
        assert abs(I.gaussian_expectation(lambda z, p=power: z**p) - moment) < 1e-12


def test_sigmoid_second_moment():
    ref = integrate.quad(lambda z: special.expit(z) ** 2 * stats.norm.pdf(z), -np.inf, np.inf,
                         epsabs=1e-14, epsrel=1e-13)[0]
    assert abs(I.SIGMOID_SECOND_MOMENT - ref) < 1e-9
    assert f"{I.SIGMOID_SECOND_MOMENT:.7f}" == "0.2933790"  # post 8620
    assert I.SIGMOID_GAIN == 1 / math.sqrt(I.SIGMOID_SECOND_MOMENT)
    z = jax.random.normal(keys(1)[0], BIG, jnp.float32)
    s2 = np.asarray(I.scaled_sigmoid(z), np.float64) ** 2
    se = s2.std() / math.sqrt(s2.size)  # se of the mean of s²
    assert abs(s2.mean() - 1.0) < 5 * se, (s2.mean(), se)
    assert I.scaled_sigmoid(z.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_selu_constants_match_jax():
    lam, alpha = I.selu_constants()
    assert (lam, alpha) == (I.SELU_LAMBDA, I.SELU_ALPHA)
    # jax.nn.selu(1) = λ and selu(-30) = λα(e^-30 − 1) = -λα in float32; float32 rounding: 1e-6
    assert abs(float(jax.nn.selu(jnp.float32(1.0))) / lam - 1) < 1e-6
    assert abs(-float(jax.nn.selu(jnp.float32(-30.0))) / (lam * alpha) - 1) < 1e-6
    # Klambauer et al. 2017
    assert abs(lam - 1.0507009873554805) < 1e-14
    assert abs(alpha - 1.6732632423543772) < 1e-14


def test_selu_constants_normalise_by_quadrature():
    lam, alpha = I.SELU_LAMBDA, I.SELU_ALPHA

    def moment(p: int) -> float:  # piecewise at the kink for full quad accuracy
        neg = integrate.quad(lambda z: (lam * alpha * math.expm1(z)) ** p * stats.norm.pdf(z),
                             -np.inf, 0, epsabs=1e-14, epsrel=1e-13)[0]
        pos = integrate.quad(lambda z: (lam * z) ** p * stats.norm.pdf(z), 0, np.inf,
                             epsabs=1e-14, epsrel=1e-13)[0]
        return neg + pos

    assert abs(moment(1)) < 1e-9
    assert abs(moment(2) - 1.0) < 1e-9


def test_second_moment_propagation():
    # Post 8620: E[y²] = m E[x²] E[w²]. Tolerance 3%: for lecun with zero-mean x the only noise
    # is ‖W‖²_F (relative sd √(2/(m·O)) < 0.1%) and the 4096 rows (< 0.1%). For relu(x), the
    # mean E[relu] = φ(0) leaks through a single W as (Σ_i w_ij)², relative sd per column
    # ≈ 0.159·2√2 ≈ 0.45; averaged over O = 4096 columns that is 0.7%, so 3% is > 4 sd.
    kx, k1, k2 = keys(3)
    x = jax.random.normal(kx, (4096, 1024), jnp.float32)
    y = x @ I.lecun()(k1, (1024, 4096))
    assert abs(float(jnp.mean(y * y)) - 1) < 0.03
    y = jax.nn.relu(x) @ I.he()(k2, (1024, 4096))
    assert abs(float(jnp.mean(y * y)) - 1) < 0.03


# --------------------------------------------------------------------------- pytree names


def test_path_name_and_named_leaves():
    tree = {"a": [1.0, {"b": 2.0}], "c": (3.0,)}
    assert list(named_leaves(tree)) == ["a.0", "a.1.b", "c.0"]
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert [path_name(p) for p in paths] == ["a.0", "a.1.b", "c.0"]


@pytest.fixture(scope="module")
def encoder_state():
    model = Encoder(EncoderConfig.tiny(), rngs=nnx.Rngs(0))
    return nnx.state(model, nnx.Param)


def test_names_of_state_and_pure_dict_agree(encoder_state):
    from jaxformer.models.modules import named_leaves as reference  # the behaviour to keep

    names = list(named_leaves(encoder_state))
    assert "blocks.0.attention.query.kernel" in names
    assert names == list(named_leaves(nnx.to_pure_dict(encoder_state)))
    assert names == list(reference(encoder_state))


# --------------------------------------------------------------------------- tree rewrites


def _ffn_output(name, leaf):
    return I.normal(1.0) if name.endswith("ffn.output.kernel") else None


def test_reinitialize_nnx_state(nnx_mode):
    model = Encoder(EncoderConfig.tiny(), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    key = jax.random.key(7)
    new = reinitialize_and_check(state, key)
    # The pure dict gives the same names, hence the same draws.
    pure = I.reinitialize(nnx.to_pure_dict(state), _ffn_output, key=key)
    for (n1, a), (n2, b) in zip(named_leaves(new).items(), named_leaves(pure).items()):
        assert n1 == n2 and np.array_equal(np.asarray(a), np.asarray(b))
    nnx.update(model, new)
    after = named_leaves(nnx.state(model, nnx.Param))
    for name, leaf in named_leaves(new).items():
        assert np.array_equal(np.asarray(after[name]), np.asarray(leaf)), name


def reinitialize_and_check(state, key):
    new = I.reinitialize(state, _ffn_output, key=key)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    old, got = named_leaves(state), named_leaves(new)
    chosen = [n for n in old if n.endswith("ffn.output.kernel")]
    assert chosen == ["blocks.0.ffn.output.kernel", "blocks.1.ffn.output.kernel"]
    order = sorted(old)
    for name in old:
        if name in chosen:
            assert got[name].shape == old[name].shape and got[name].dtype == old[name].dtype
            assert not np.array_equal(np.asarray(got[name]), np.asarray(old[name]))
            # 64·32 = 2048 draws: the std's se is ~1.6%, so 10% is > 6 se.
            assert abs(float(np.std(np.asarray(got[name], np.float64))) - 1) < 0.1
            # the documented key: fold_in(key, index of the name among all sorted names)
            want = I.normal(1.0)(jax.random.fold_in(key, order.index(name)), old[name].shape)
            assert np.array_equal(np.asarray(got[name]), np.asarray(want))
        else:
            assert np.array_equal(np.asarray(got[name]), np.asarray(old[name])), name
    again = named_leaves(I.reinitialize(state, _ffn_output, key=key))
    other = named_leaves(I.reinitialize(state, _ffn_output, key=jax.random.key(8)))
    for name in chosen:
        assert np.array_equal(np.asarray(again[name]), np.asarray(got[name]))
        assert not np.array_equal(np.asarray(other[name]), np.asarray(got[name]))
    return new


def test_reinitialize_rejects_wrong_shape():
    def bad(key, shape, dtype=jnp.float32):
        return jnp.zeros((1,), dtype)

    with pytest.raises(ValueError, match=r"'w'.*shape \(2, 3\).*got shape \(1,\)"):
        I.reinitialize({"w": jnp.ones((2, 3))}, lambda n, x: bad, key=jax.random.key(0))


def test_scale_leaves(encoder_state):
    beta = 1 / math.sqrt(2 * 2)  # GPT-2's 1/√(2L), L = 2 layers

    def rule(name, leaf):
        return beta if name.endswith(("attention.output.kernel", "ffn.output.kernel")) else None

    new = I.scale_leaves(encoder_state, rule)
    assert jax.tree.structure(new) == jax.tree.structure(encoder_state)
    old, got = named_leaves(encoder_state), named_leaves(new)
    hit = 0
    for name, leaf in old.items():
        if rule(name, leaf) is None:
            assert np.array_equal(np.asarray(got[name]), np.asarray(leaf)), name
        else:
            hit += 1
            want = np.asarray(leaf) * np.float32(beta)  # exact: one float32 multiply
            assert got[name].dtype == leaf.dtype and np.array_equal(np.asarray(got[name]), want)
    assert hit == 4
    with pytest.raises(ValueError, match="floating leaves.*'n'.*int32"):
        I.scale_leaves({"n": jnp.arange(3)}, lambda name, x: 2.0)


# --------------------------------------------------------------------------- properties

INITS = {
    "normal": I.normal(0.1, mean=0.5),
    "uniform": I.uniform(0.1),
    "truncated": I.truncated_normal(0.1),
    "truncated_raw": I.truncated_normal(0.1, corrected=False),
    "lecun": I.lecun(),
    "he": I.he(distribution="uniform"),
    "xavier": I.xavier(distribution="truncated_normal"),
    **{f"{m}/{d}": I.variance_scaling(1.5, m, d) for m in I.MODES for d in I.DISTRIBUTIONS},
}


@contextlib.contextmanager
def quick_compiles():
    """XLA without most optimizations: halves the compile that every new shape costs (~0.4 s
    per sampler on 2 cores). Shapes, dtypes and determinism do not depend on it."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


# One initializer per example, since each new shape compiles the sampler again.
@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(INITS)),
       shape=st.lists(st.integers(1, 8), min_size=2, max_size=4).map(tuple),
       dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
       seed=st.integers(0, 2**31 - 1))
def test_shape_dtype_and_determinism(name, shape, dtype, seed):
    key = jax.random.key(seed)
    with quick_compiles():
        a = INITS[name](key, shape, dtype)
        b = INITS[name](key, shape, dtype)
    assert a.shape == shape and a.dtype == dtype
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)  # numpy: no compile per shape
    assert np.array_equal(a, b) and np.all(np.isfinite(a))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,match", [
    (lambda: I.normal(0.0), r"std must be a finite number > 0, got 0\.0"),
    (lambda: I.normal(-1.0), r"std .* got -1\.0"),
    (lambda: I.normal(float("nan")), r"std .* got nan"),
    (lambda: I.normal(1.0, mean=float("inf")), r"mean .* got inf"),
    (lambda: I.uniform(0.0), r"std .* got 0\.0"),
    (lambda: I.truncated_normal(-1.0), r"std .* got -1\.0"),
    (lambda: I.truncated_normal(1.0, bound=0.0), r"bound .* got 0\.0"),
    (lambda: I.truncated_normal_variance(-2.0), r"bound .* got -2\.0"),
    (lambda: I.variance_scaling(0.0, "fan_in", "normal"), r"scale .* got 0\.0"),
    (lambda: I.variance_scaling(1.0, "fan_foo", "normal"),
     r"mode must be one of \('fan_in', 'fan_out', 'fan_avg'\), got 'fan_foo'"),
    (lambda: I.variance_scaling(1.0, "fan_in", "cauchy"),
     r"distribution must be one of \('normal', 'truncated_normal', 'uniform'\), got 'cauchy'"),
    (lambda: I.lecun(mode="fan_foo"), r"mode .* got 'fan_foo'"),
    (lambda: I.gaussian_expectation(np.exp, order=0), r"order .* got 0"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("call,match", [
    (lambda k: I.variance_scaling(1.0, "fan_in", "normal")(k, (5,)),
     r"rank >= 2.*got shape \(5,\) of rank 1"),
    (lambda k: I.normal(1.0)(k, (2, -1)), r"shape .* got \(2, -1\).*-1 < 0"),
    (lambda k: I.uniform(1.0)(k, (2, 3), jnp.int32), r"dtype must be a floating .* got int32"),
    (lambda k: I.fans((2, 3), in_axis=1, out_axis=-1), r"in_axis and out_axis must differ"),
    (lambda k: I.fans((2, 3), in_axis=2), r"in_axis must be in \[-2, 2\) .* got 2"),
])
def test_bad_requests(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0))
