"""`VisionEncoder`: the encoder's `Block` over a patch grid with absolute, 2D RoPE and RoPE-Mixed
positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.heads import classification_loss
from jaxformer.models.vision import (VisionConfig, VisionEncoder, patchify,
                                     resize_position_table)
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_train_step, merge_model

# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile);
# the quantities checked do not depend on them.
pytestmark = pytest.mark.usefixtures("fast_compile")

KINDS = ("absolute", "rope", "rope_mixed")


def _images(n, size, channels=1, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, channels), jnp.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_at_several_grids(kind):
    model = VisionEncoder(VisionConfig.tiny(position=kind), rngs=nnx.Rngs(0))
    for h, w in ((8, 8), (12, 12), (16, 16), (4, 6), (10, 8)):
        logits = model(_images(3, 1)[:, :1, :1, :] * jnp.ones((3, h, w, 1), jnp.float32),
                       deterministic=True)
        assert logits.shape == (3, 10)
        assert bool(jnp.all(jnp.isfinite(logits)))


def test_block_is_the_encoder_block_and_config_sets_position():
    from jaxformer.models.encoder import Block
    for kind in KINDS:
        model = VisionEncoder(VisionConfig.tiny(position=kind), rngs=nnx.Rngs(0))
        assert all(type(b) is Block for b in model.blocks)
        assert model.config.block_config.position == kind
    mixed = VisionEncoder(VisionConfig.tiny(position="rope_mixed"), rngs=nnx.Rngs(0))
    assert mixed.blocks[0].attention.rope_freqs[...].shape == (4, 2, 4)  # [H, A, D/2]


def test_absolute_table_interpolation_is_identity_at_training_grid():
    model = VisionEncoder(VisionConfig.tiny(position="absolute"), rngs=nnx.Rngs(0))
    table = model.position_table[...]
    assert table.shape == (4, 4, 32)
    np.testing.assert_array_equal(np.asarray(resize_position_table(table, 4, 4)),
                                  np.asarray(table))
    # jax.image.resize itself (the non-shortcut path) is identity at scale 1 too.
    same = jax.image.resize(table, table.shape, method="bilinear")
    np.testing.assert_allclose(np.asarray(same), np.asarray(table), atol=1e-6)
    bigger = resize_position_table(table, 8, 6)
    assert bigger.shape == (8, 6, 32)
    # The model at the training grid adds the table itself: patch_embed + table.
    x = _images(2, 8)
    h = model.patch_embed(patchify(x, 2)) + table[None]
    assert h.shape == (2, 4, 4, 32)


@pytest.mark.parametrize("kind", ["rope", "rope_mixed"])
def test_shifted_positions_give_same_logits(kind):
    """Relativity through the whole model: all patch positions + (5, 11) -> the same logits;
    a non-shift change (scaling) does change them, so the check has teeth."""
    cfg = VisionConfig.tiny(position=kind,
                            encoder=EncoderConfig.tiny(norm="pre", hidden_dropout=0.0,
                                                       attention_dropout=0.0,
                                                       initializer_range=0.5))
    model = VisionEncoder(cfg, rngs=nnx.Rngs(1))
    x = _images(4, 8)
    pos = model.positions(4, 4)
    base = model(x, deterministic=True)
    np.testing.assert_allclose(np.asarray(model(x, deterministic=True, positions=pos)),
                               np.asarray(base), atol=1e-6)
    shifted = model(x, deterministic=True, positions=pos + jnp.asarray([[[5.0, 11.0]]]))
    scale = float(jnp.max(jnp.abs(base)))
    assert scale > 0.1
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(base), atol=2e-5 * scale)
    scaled = model(x, deterministic=True, positions=pos * jnp.asarray([[[2.0, 3.0]]]))
    assert float(jnp.max(jnp.abs(scaled - base))) > 1e-3 * scale


def test_rope_extent_positions_match_training_range():
    model = VisionEncoder(VisionConfig.tiny(position="rope"), rngs=nnx.Rngs(0))
    idx = np.asarray(model.positions(8, 8, mode="index"))
    ext = np.asarray(model.positions(8, 8, mode="extent"))
    assert idx.max() == 7.0 and ext.max() == 3.5
    np.testing.assert_array_equal(np.asarray(model.positions(4, 4, mode="extent")),
                                  np.asarray(model.positions(4, 4, mode="index")))


def test_rope_mixed_frequencies_receive_gradients():
    model = VisionEncoder(VisionConfig.tiny(position="rope_mixed"), rngs=nnx.Rngs(0))
    x, y = _images(8, 8), jnp.arange(8, dtype=jnp.int32)

    def loss(m):
        return classification_loss(m(x, deterministic=True), y)[0]

    grads = nnx.grad(loss)(model)
    found = [(jax.tree_util.keystr(path), np.asarray(leaf))
             for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]
             if "rope_freqs" in jax.tree_util.keystr(path)]
    assert len(found) == 2, [name for name, _ in found]  # one [H, A, P] per layer
    for name, g in found:
        assert g.shape == (4, 2, 4), name
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6, name


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    data = load_digits()
    x = (data.images.astype(np.float32) / np.float32(16.0))[..., None]
    return train_test_split(x, data.target.astype(np.int32), test_size=0.25, random_state=0,
                            stratify=data.target)


@pytest.mark.parametrize("kind", KINDS)
def test_short_training_on_digits_beats_chance(kind):
    """200 steps of the kit's train step; > 30% = 3x chance (measured 0.42-0.66 on CPU)."""
    x_tr, x_te, y_tr, y_te = _digits()
    cfg = VisionConfig.tiny(position=kind)
    steps, batch = 200, 64
    tx = adamw(3e-3, total_steps=steps, warmup_steps=10, weight_decay=0.0)

    def loss_fn(model, b, *, key, deterministic):
        logits = model(b["images"], deterministic=deterministic, key=key)
        loss, acc = classification_loss(logits, b["labels"])
        return loss, {"accuracy": acc}

    graphdef, state = init_train_state(VisionEncoder(cfg, rngs=nnx.Rngs(0)), tx)
    step = make_train_step(graphdef, tx, loss_fn)
    rng = np.random.default_rng(0)
    for s in range(steps):
        idx = rng.choice(len(x_tr), batch, replace=False)
        state, _ = step(state, {"images": jnp.asarray(x_tr[idx]), "labels": jnp.asarray(y_tr[idx])},
                        key=jax.random.key(0))
    model = merge_model(graphdef, state)
    pred = np.asarray(jnp.argmax(jax.jit(lambda x: model(x, deterministic=True))(
        jnp.asarray(x_te)), axis=-1))
    acc = float(np.mean(pred == y_te))
    assert acc > 0.3, f"{kind}: test accuracy {acc:.3f} after {steps} steps (chance 0.1)"


@pytest.mark.parametrize("images, match", [
    (jnp.zeros((2, 9, 8, 1), jnp.float32), r"multiples of patch_size=2, got H=9, W=8"),
    (jnp.zeros((2, 8, 7, 1), jnp.float32), r"multiples of patch_size=2, got H=8, W=7"),
    (jnp.zeros((8, 8, 1), jnp.float32), r"images must have rank 4 \[B, H, W, N=1\], got rank 3"),
    (jnp.zeros((2, 8, 8, 3), jnp.float32), r"images must have N=1 channels .* got 3"),
])
def test_bad_images_name_argument_expected_and_actual(images, match):
    model = VisionEncoder(VisionConfig.tiny(position="rope"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        model(images, deterministic=True)


def test_bad_dtype_positions_and_config():
    model = VisionEncoder(VisionConfig.tiny(position="rope"), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"images must be a float array, got dtype int32"):
        model(jnp.zeros((2, 8, 8, 1), jnp.int32), deterministic=True)
    with pytest.raises(ValueError, match=r"positions must have shape \[B\|1, T, 2\] = \[2\|1, 16, 2\]"):
        model(jnp.zeros((2, 8, 8, 1), jnp.float32), deterministic=True,
              positions=jnp.zeros((1, 16), jnp.float32))
    absolute = VisionEncoder(VisionConfig.tiny(position="absolute"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"positions= applies to position='rope'"):
        absolute(jnp.zeros((2, 8, 8, 1), jnp.float32), deterministic=True,
                 positions=jnp.zeros((1, 16, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"image_size=9 must be divisible by patch_size=2"):
        VisionConfig.tiny(image_size=9)
    with pytest.raises(ValueError, match=r"position must be one of .* got 'sincos'"):
        VisionConfig.tiny(position="sincos")
    with pytest.raises(ValueError, match=r"rope_positions must be one of .* got 'stretch'"):
        VisionConfig.tiny(rope_positions="stretch")
    with pytest.raises(ValueError, match=r"rope_axes=2 .* multiple of 2\*rope_axes=4"):
        EncoderConfig.tiny(hidden_size=24, num_heads=4, position="rope", rope_axes=2)
    with pytest.raises(ValueError, match=r"rope_mixed.*no HF equivalent"):
        EncoderConfig.tiny(position="rope_mixed").to_hf_dict()
