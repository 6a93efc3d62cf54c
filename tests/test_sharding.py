"""Data, fully sharded and tensor parallelism (`jaxformer.train.sharding`) on 8 virtual CPU devices.

Each preset and mesh shape must give the one-device train step's loss and parameters: the same
maths, laid out differently. Tolerance: fp32 reductions summed in another order, through two
AdamW updates (eps 1e-6, so a near-zero gradient cannot flip an update's sign): loss rtol 1e-5,
parameters atol 2e-5 (the measured gap is about 2e-6).
"""

import re

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxformer.models.config import EncoderConfig
from jaxformer.models.logical_axes import logical_axes, path_string
from jaxformer.tasks import ClassificationTask
from jaxformer.tasks.mlm import MaskedLMTask
from jaxformer.train import sharding as S
from jaxformer.train.optim import adamw
from jaxformer.train.step import (TrainState, init_train_state, make_eval_step,
                                  make_train_step)

# 8 heads and widths divisible by 8, so every split is even up to an 8-way model axis.
# One block keeps the 32 compiled 8-device steps affordable in CI; the block is what is split.
CFG = EncoderConfig.tiny(hidden_size=64, num_heads=8, intermediate_size=128, num_layers=1,
                         hidden_dropout=0.1, attention_dropout=0.1)
SHAPES = [(8, 1), (4, 2), (2, 4), (1, 8)]
PRESETS = ["dp", "fsdp", "tp", "dp_tp"]
STEPS = 2

# XLA's optimisation passes dominate these toy steps' CPU compile time (conftest.fast_compile);
# every comparison here is between programs compiled under the same setting. The HLO and memory
# checks, which need the optimised programs, are in test_sharding_hlo.py.
pytestmark = pytest.mark.usefixtures("fast_compile")


def _tx():
    return adamw(1e-2, total_steps=10, warmup_steps=1, eps=1e-6)


def _tasks():
    return {"mlm": MaskedLMTask(CFG, mask_id=4, special_ids=(0, 1, 2, 3, 4)),
            "classification": ClassificationTask(CFG, num_labels=3)}


def _batch(kind):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, CFG.vocab_size, (8, 16)).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": (np.arange(16) < 12).astype(np.int32)[None]
             .repeat(8, 0)}
    if kind == "classification":
        batch["labels"] = rng.integers(0, 3, 8).astype(np.int32)
    return batch


def _run(step, state, batch):
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch, key=jax.random.key(7))
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def one_device():
    """Per task: (initial state, losses, final state) of the unsharded step."""
    out = {}
    for kind, task in _tasks().items():
        graphdef, state = init_train_state(task.build_model(rngs=nnx.Rngs(0)), _tx())
        initial = jax.tree.map(np.asarray, state)
        final, losses = _run(make_train_step(graphdef, _tx(), task.loss_fn, donate=False),
                             state, _batch(kind))
        out[kind] = (graphdef, initial, losses, jax.tree.map(np.asarray, final))
    return out


@pytest.mark.parametrize("kind", ["mlm", "classification"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_and_mesh_shape_equals_one_device(one_device, preset, shape, kind):
    graphdef, initial, losses, final = one_device[kind]
    mesh, rules = S.make_mesh(shape), S.ShardingRules.preset(preset)
    state, shardings = S.shard_train_state(initial, mesh=mesh, rules=rules)
    step = make_train_step(graphdef, _tx(), _tasks()[kind].loss_fn, mesh=mesh,
                           data_axis=rules.batch_axis, shardings=shardings, donate=False,
                           activations=S.activation_constraint(rules, mesh))
    state, got = _run(step, state, _batch(kind))
    np.testing.assert_allclose(got, losses, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state.params)[0],
                            jax.tree.leaves(final.params)):
        np.testing.assert_allclose(np.asarray(a), b, atol=2e-5, err_msg=path_string(path))
    want = S.tree_shardings(final.params, rules, mesh)
    # The state stays in the preset's layout across steps (the output shardings are kept).
    assert jax.tree.map(lambda x: x.sharding.spec, state.params) == jax.tree.map(
        lambda s: s.spec, want)


def _spec(state, *path):
    node = state.params
    for p in path:
        node = node[p]
    return node.get_value().sharding.spec


def test_presets_split_what_they_say():
    task = _tasks()["mlm"]
    build = lambda: task.build_model(rngs=nnx.Rngs(0))  # noqa: E731
    q = ("encoder", "blocks", 0, "attention", "query", "kernel")
    o = ("encoder", "blocks", 0, "attention", "output", "kernel")
    f1 = ("encoder", "blocks", 0, "ffn", "intermediate", "kernel")
    f2 = ("encoder", "blocks", 0, "ffn", "output", "kernel")
    emb = ("encoder", "embed", "word", "embedding")
    pos = ("encoder", "embed", "position", "embedding")
    expected = {
        "dp": {q: P(None, None), o: P(None, None), emb: P(None, None), pos: P(None, None)},
        "fsdp": {q: P("data", None), o: P(None, "data"), f1: P("data", None),
                 f2: P(None, "data"), emb: P(None, "data"), pos: P(None, "data")},
        "tp": {q: P(None, "model"), o: P("model", None), f1: P(None, "model"),
               f2: P("model", None), emb: P("model", None), pos: P(None, None)},
    }
    for preset, want in expected.items():
        _, state, _ = S.create_train_state(build, _tx(), mesh=S.make_mesh((4, 2)),
                                           rules=S.ShardingRules.preset(preset))
        for path, spec in want.items():
            assert _spec(state, *path) == spec, (preset, path)
        # Adam's moments are laid out like their parameter; its step counters are replicated.
        moments = {path_string(p): x for p, x in
                   jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
        for path, spec in want.items():
            name = "/".join(map(str, path))
            for moment in ("mu", "nu"):
                (leaf,) = [x for k, x in moments.items() if k.endswith(f"/{moment}/{name}")]
                assert leaf.sharding.spec == spec, (preset, moment, path)
        assert all(x.sharding.spec == P() for x in moments.values() if x.ndim == 0)


def test_created_sharded_equals_the_eager_build_and_is_never_whole_on_one_device():
    task = _tasks()["mlm"]
    build = lambda: task.build_model(rngs=nnx.Rngs(0))  # noqa: E731
    _, eager = init_train_state(build(), _tx())
    mesh = S.make_mesh((8, 1))
    _, state, _ = S.create_train_state(build, _tx(), mesh=mesh,
                                       rules=S.ShardingRules.preset("fsdp"))
    # The same random bits; the initialisers' float arithmetic is fused differently under jit,
    # so equal up to an ulp (measured: 1.2e-7 relative).
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(eager.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
    emb = state.params["encoder"]["embed"]["word"]["embedding"].get_value()
    # Each of the 8 devices holds a [V, E / 8] slice, not the table.
    assert {s.data.shape for s in emb.addressable_shards} == {(CFG.vocab_size, 64 // 8)}


def test_every_parameter_of_the_encoder_models_has_logical_names():
    for task in (*_tasks().values(),):
        state = nnx.state(task.build_model(rngs=nnx.Rngs(0)), nnx.Param)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            where = path_string(path)
            assert logical_axes(where, leaf.ndim) is not None, where


def test_unnamed_parameter_and_bad_rules_are_refused_with_names():
    mesh = S.make_mesh((4, 2))
    rules = S.ShardingRules.preset("fsdp")
    with pytest.raises(ValueError, match=r"parameter 'mystery/kernel' \(4, 4\): no logical axis "
                                         r"rule matches it"):
        S.tree_specs({"mystery": {"kernel": np.zeros((4, 4))}}, rules, mesh, strict=True)
    with pytest.raises(ValueError, match=r"preset: expected one of \['dp', 'dp_tp', 'fsdp', "
                                         r"'tp'\], got 'zero'"):
        S.ShardingRules.preset("zero")
    with pytest.raises(ValueError, match=r"rules: expected each logical name once"):
        S.ShardingRules((("embed", "data"), ("embed", "model")))
    with pytest.raises(ValueError, match=r"rules: 'heads' maps to mesh axis 'tensor', which the "
                                         r"mesh lacks"):
        S.ShardingRules((("heads", "tensor"),)).spec(("heads",), (8,), mesh)
    with pytest.raises(ValueError, match=r"shape: \(4, 4\) needs 16 devices, got 8"):
        S.make_mesh((4, 4))
    graphdef = nnx.graphdef(_tasks()["mlm"].build_model(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"shardings: given without a mesh"):
        make_train_step(graphdef, _tx(), _tasks()["mlm"].loss_fn,
                        shardings=TrainState(None, None, None, None))


def test_resolution_leaves_uneven_and_reused_axes_unsplit():
    mesh = S.make_mesh((4, 2))
    fsdp = S.ShardingRules.preset("fsdp")
    # An activation [batch, length, embed]: 'data' already splits the batch, so not the width.
    assert fsdp.spec(("batch", "length", "embed"), (8, 16, 64), mesh) == P("data", None, None)
    assert fsdp.spec(("embed", "heads"), (64, 64), mesh) == P("data", None)
    # 6 rows do not split 4 ways: kept whole rather than padded.
    assert fsdp.spec(("embed", None), (6, 3), mesh) == P(None, None)
    assert S.ShardingRules.preset("tp").batch_axis is None


def test_checkpoint_saved_on_one_mesh_restores_on_another_and_on_one_device(tmp_path):
    from jaxformer.train.checkpoint import Checkpointer

    task = _tasks()["mlm"]
    build = lambda: task.build_model(rngs=nnx.Rngs(0))  # noqa: E731
    _, saved, _ = S.create_train_state(build, _tx(), mesh=S.make_mesh((4, 2)),
                                       rules=S.ShardingRules.preset("dp_tp"))
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(3, saved)
    ckpt.wait()
    want = jax.tree.map(np.asarray, saved)
    mesh = S.make_mesh((8, 1))
    fsdp = S.train_state_shardings(saved, S.ShardingRules.preset("fsdp"), mesh)
    targets = {
        "fsdp on 8x1": jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                        sharding=s), saved, fsdp),
        "one device": jax.tree.map(lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
            saved),
    }
    for name, target in targets.items():
        restored, _ = ckpt.restore(3, target)
        for a, b, t in zip(jax.tree.leaves(restored), jax.tree.leaves(want),
                           jax.tree.leaves(target)):
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=name)
            assert a.sharding.is_equivalent_to(t.sharding, a.ndim), name
