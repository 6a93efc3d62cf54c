"""`EncoderConfig(scan_layers=True)`: the blocks as one `lax.scan`, against the unrolled loop and
against HF PyTorch `BertModel` (fp32; that test runs in NNX graph and tree mode).

The scan only changes how XLA sees the stack (one loop body instead of L copies), so a scanned
encoder must give the unrolled one's outputs, gradients and dropout masks, keep the same
parameter tree (checkpoints are interchangeable), and still match HF to the parity tolerance.
Its speed is measured in `benchmarks/bench_scan_layers.py`, not asserted here.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_reference import hf_forward, random_batch, random_hf_bert
from jaxformer.models import Encoder, EncoderConfig
from jaxformer.models.config import RESIDUAL_SCHEMES

ATOL = 1e-5  # fp32: the same maths, only the order of float operations may differ

SCHEMES = {**RESIDUAL_SCHEMES,
           "rope_rmsnorm": dict(norm="pre", norm_type="rmsnorm", position="rope")}


def _pair(scheme: str, **extra):
    cfg = EncoderConfig.tiny(vocab_size=61, num_layers=4, **{**SCHEMES[scheme], **extra})
    unrolled = Encoder(cfg, rngs=nnx.Rngs(5))
    scanned = Encoder(dataclasses.replace(cfg, scan_layers=True), rngs=nnx.Rngs(5))
    # Move every parameter (and ReZero's α, zero at init) away from its init value, the same in
    # both, so that a block applied out of order or a dropped gate cannot hide.
    state = nnx.state(unrolled, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    moved = [x + 0.1 * jax.random.normal(jax.random.key(i), x.shape, x.dtype)
             for i, x in enumerate(leaves)]
    for model in (unrolled, scanned):
        nnx.update(model, jax.tree.unflatten(treedef, moved))
    if scheme == "rezero_ramp":
        from jaxformer.models.parametrization import set_residual_gates

        for model in (unrolled, scanned):
            nnx.update(model, set_residual_gates(nnx.state(model), 0.37))
    return unrolled, scanned


def _batch(seed: int = 0):
    ids, mask, types = random_batch(seed, batch=3, length=11, vocab=61, types=2)
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_scan_matches_the_unrolled_loop(scheme, key):
    unrolled, scanned = _pair(scheme)
    ids, mask, types = _batch()
    for deterministic in (True, False):  # with dropout: block i must get fold_in(key, i + 1)
        a = unrolled(ids, attention_mask=mask, token_type_ids=types,
                     deterministic=deterministic, key=key)
        b = scanned(ids, attention_mask=mask, token_type_ids=types,
                    deterministic=deterministic, key=key)
        assert len(b.hidden_states) == len(a.hidden_states) == 5
        for layer, (x, y) in enumerate(zip(a.hidden_states, b.hidden_states, strict=True)):
            np.testing.assert_allclose(y, x, atol=ATOL, rtol=0,
                                       err_msg=f"hidden_states[{layer}], {deterministic=}")
        np.testing.assert_allclose(b.last_hidden_state, a.last_hidden_state, atol=ATOL, rtol=0)
        np.testing.assert_allclose(b.pooled, a.pooled, atol=ATOL, rtol=0)
    # Dropout did act (tiny has p = 0.1), so the masks really were compared.
    assert not np.allclose(a.last_hidden_state, unrolled(
        ids, attention_mask=mask, token_type_ids=types, deterministic=True).last_hidden_state)


@pytest.mark.parametrize("scheme", ["pre_ln", "rezero"])
def test_scan_gradients_match_the_unrolled_loop(scheme, key):
    unrolled, scanned = _pair(scheme)
    ids, mask, types = _batch(1)
    probe = jax.random.normal(key, (3, 11, 32), jnp.float32)

    def loss(model):  # noqa: ANN001, ANN202
        out = model(ids, attention_mask=mask, token_type_ids=types, deterministic=True)
        return jnp.sum(out.last_hidden_state * probe)

    grads = [nnx.grad(loss)(m) for m in (unrolled, scanned)]
    flat = [dict(jax.tree_util.tree_flatten_with_path(g)[0]) for g in grads]
    assert flat[0].keys() == flat[1].keys()
    for path, g in flat[0].items():
        want = np.asarray(g)
        np.testing.assert_allclose(np.asarray(flat[1][path]), want,
                                   atol=1e-5 * max(1.0, float(np.abs(want).max())), rtol=0,
                                   err_msg=str(path))


def test_scan_keeps_the_parameter_tree():
    """Checkpoints are interchangeable: same paths, shapes and dtypes as the unrolled model."""
    unrolled, scanned = _pair("post_ln")
    shapes = [jax.tree.map(lambda x: (x.shape, x.dtype), nnx.state(m)) for m in (unrolled, scanned)]
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
    assert jax.tree.leaves(shapes[0]) == jax.tree.leaves(shapes[1])


def test_scan_compiles_one_loop_body(key):
    """The lowered scanned encoder holds a while loop and one copy of the block; the unrolled one
    holds none and L copies (counted by the attention softmaxes' exponentials)."""
    unrolled, scanned = _pair("pre_ln")
    ids, mask, types = _batch()
    texts = []
    for model in (unrolled, scanned):
        graphdef, state = nnx.split(model)

        def forward(state):  # noqa: ANN001, ANN202
            return nnx.merge(graphdef, state)(ids, attention_mask=mask, token_type_ids=types,
                                              deterministic=True).last_hidden_state

        texts.append(jax.jit(forward).lower(state).as_text())
    assert "stablehlo.while" not in texts[0] and "stablehlo.while" in texts[1]
    assert texts[0].count("stablehlo.exponential") == 4 * texts[1].count("stablehlo.exponential")


def test_scanned_encoder_matches_hf_bert(tmp_path, nnx_mode):
    from jaxformer import load_pretrained, save_pretrained

    hf = random_hf_bert(seed=4, layers=3)
    hf.save_pretrained(tmp_path / "hf")
    model = load_pretrained(tmp_path / "hf", scan_layers=True)
    assert model.config.scan_layers
    ids, mask, types = random_batch(2, batch=4, length=13, vocab=99, types=3)
    out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                token_type_ids=jnp.asarray(types), deterministic=True)
    hidden, pooled = hf_forward(hf, ids, mask, types)
    for layer, (a, b) in enumerate(zip(out.hidden_states, hidden, strict=True)):
        err = float(np.max(np.abs(np.asarray(a, np.float64) - b)))
        assert err < ATOL, f"hidden_states[{layer}] max abs error {err:.2e}"
    assert float(np.max(np.abs(np.asarray(out.pooled, np.float64) - pooled))) < ATOL
    # A compute option: it exports, and the written config does not carry it.
    save_pretrained(model, tmp_path / "ours")
    assert "scan_layers" not in (tmp_path / "ours" / "config.json").read_text()


def test_scan_layers_must_be_a_bool():
    # The tests' jaxtyping hook already refuses scan_layers=1 at the constructor (a TypeCheckError);
    # users have no such hook, so __post_init__ checks it too: call it on a frozen instance whose
    # field was set behind the dataclass' back.
    cfg = EncoderConfig.tiny()
    object.__setattr__(cfg, "scan_layers", 1)
    with pytest.raises(ValueError, match=r"EncoderConfig.scan_layers must be a bool, got 1"):
        cfg.__post_init__()


def test_moment_report_is_the_same_for_a_scanned_encoder():
    """`moment_report` differentiates through the hidden states; the scan must not change that."""
    from jaxformer.train import moment_report

    cfg = EncoderConfig.tiny(num_layers=6, norm="pre", hidden_dropout=0.0, attention_dropout=0.0)
    batch = {"input_ids": (jnp.arange(32, dtype=jnp.int32).reshape(2, 16) % 100) + 1}
    reports = [moment_report(Encoder(c, rngs=nnx.Rngs(0)), batch)
               for c in (cfg, dataclasses.replace(cfg, scan_layers=True))]
    for field in ("forward", "grad"):
        np.testing.assert_allclose(np.asarray(getattr(reports[1], field)),
                                   np.asarray(getattr(reports[0], field)), rtol=1e-5,
                                   err_msg=field)
