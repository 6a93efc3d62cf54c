"""`BlockStack`: one loop over blocks (loop or scan, remat policy, stage keys, hidden states),
shared by the text and the vision encoder. The reference is the plain unrolled loop with the
documented per-block keys ``fold_in(key, i + 1)``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models import BlockStack, Encoder, EncoderConfig
from jaxformer.models.block_stack import REMAT_NAMES
from jaxformer.models.vision import VisionConfig, VisionEncoder

VARIANTS = [dict(scan_layers=False, remat="none"), dict(scan_layers=True, remat="none"),
            *(dict(scan_layers=s, remat=r) for r in REMAT_NAMES[1:] for s in (False, True))]


def _cfg(**kw):
    return EncoderConfig.tiny(num_layers=3, hidden_dropout=0.1, attention_dropout=0.1, **kw)


def _batch():
    rng = np.random.default_rng(0)
    mask = np.ones((2, 12), np.int32)
    mask[1, 8:] = 0
    return jnp.asarray(rng.integers(1, 128, (2, 12)), jnp.int32), jnp.asarray(mask)


@functools.lru_cache(maxsize=None)
def _loss_and_grads(cfg):
    ids, mask = _batch()
    model = Encoder(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        out = nnx.merge(graphdef, params)(ids, attention_mask=mask, deterministic=False,
                                          key=jax.random.key(5))
        return jnp.mean(jnp.square(out.last_hidden_state)), out.hidden_states

    (value, hidden), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, hidden, grads


def test_manual_loop_reference():
    """The stack equals calling each block with key fold_in(key, i + 1) by hand."""
    cfg = _cfg()
    ids, mask = _batch()
    model = Encoder(cfg, rngs=nnx.Rngs(0))
    key = jax.random.key(5)
    out = model(ids, attention_mask=mask, deterministic=False, key=key)
    h = model.embed(ids, deterministic=False, key=jax.random.fold_in(key, 0))
    m = (mask != 0)[:, None, None, :]
    for i, block in enumerate(model.blocks):
        h = block(h, mask=m, deterministic=False, key=jax.random.fold_in(key, i + 1))
        np.testing.assert_allclose(np.asarray(out.hidden_states[i + 1]), np.asarray(h),
                                   rtol=1e-6, atol=1e-6)
    assert len(out.hidden_states) == cfg.num_layers + 1


@pytest.mark.parametrize("variant", VARIANTS[1:], ids=lambda v: f"scan={v['scan_layers']}-{v['remat']}")
def test_scan_and_remat_change_nothing_but_compute(variant):
    """Loss, every hidden state and every gradient equal the plain loop's (dropout on: the same
    masks), fp32 within 1e-5 relative (remat reorders nothing; the scan stacks parameters)."""
    ref_loss, ref_hidden, ref_grads = _loss_and_grads(_cfg())
    loss, hidden, grads = _loss_and_grads(_cfg(**variant))
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    for a, b in zip(hidden, ref_hidden, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("remat", REMAT_NAMES)
def test_remat_puts_a_checkpoint_in_the_backward_pass(remat):
    ids, mask = _batch()
    model = Encoder(_cfg(remat=remat), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        out = nnx.merge(graphdef, params)(ids, attention_mask=mask, deterministic=True)
        return jnp.sum(out.last_hidden_state)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
    assert ("checkpoint" in jaxpr or "remat" in jaxpr) == (remat != "none")


def test_parameter_paths_are_unchanged():
    names = {".".join(str(p) for p in path)
             for path, _ in nnx.to_flat_state(nnx.state(Encoder(_cfg(), rngs=nnx.Rngs(0)),
                                                        nnx.Param))}
    assert "blocks.0.attention.query.kernel" in names
    assert "blocks.2.ffn.output.bias" in names
    model = Encoder(_cfg(), rngs=nnx.Rngs(0))
    assert isinstance(model.blocks, BlockStack) and len(model.blocks) == 3
    assert model.blocks[1] is list(model.blocks)[1]


def test_vision_encoder_uses_the_same_stack():
    base = VisionConfig.tiny()
    images = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1), jnp.float32)
    logits = {}
    for scan, remat in ((False, "none"), (True, "block")):
        cfg = base.replace(encoder=base.encoder.replace(scan_layers=scan, remat=remat,
                                                        hidden_dropout=0.1))
        model = VisionEncoder(cfg, rngs=nnx.Rngs(0))
        assert isinstance(model.blocks, BlockStack)
        logits[scan] = model(images, deterministic=False, key=jax.random.key(1))
    np.testing.assert_allclose(np.asarray(logits[True]), np.asarray(logits[False]),
                               rtol=1e-5, atol=1e-6)


def test_bad_stack_options_are_refused():
    with pytest.raises(ValueError, match=r"remat must be one of \['none', 'block', "
                                         r"'dots_saveable', .*got 'everything'"):
        BlockStack([], remat="everything")
    with pytest.raises((ValueError, TypeError), match=r"scan"):  # ours, or the hook's check
        BlockStack([], scan=1)
    h = jnp.ones((1, 2, 4), jnp.float32)
    last, hidden = BlockStack([])(h, mask=None, deterministic=True)
    assert last is h and hidden == (h,)
