"""Data parallelism over the 8 virtual CPU devices of conftest: one jit with shardings.

A sharded step must equal the single-device step up to fp32 reduction order (the batch mean
of the loss and its gradient are summed in a different order across 8 shards), dropout
included: with JAX's partitionable threefry the random bits do not depend on the sharding.
"""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.train.finetune import batch_at, classifier_loss, evaluate
from jaxformer.train.optim import adamw
from jaxformer.train.step import data_shardings, init_train_state, make_eval_step, make_train_step
from synthetic import token_task

STEPS = 3


# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")




def run(mesh, data, *, steps: int = STEPS):
    model = SequenceClassifier(Encoder(EncoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(params=0)),
                               2, rngs=nnx.Rngs(params=1))
    tx = adamw(1e-2, total_steps=20, warmup_steps=0)
    graphdef, state = init_train_state(model, tx)
    seen = []

    def spying_loss(model, batch, *, key, deterministic):
        # Called back at compile time with the sharding XLA gives input_ids inside the step.
        jax.debug.inspect_array_sharding(batch["input_ids"], callback=seen.append)
        return classifier_loss(model, batch, key=key, deterministic=deterministic)

    step = make_train_step(graphdef, tx, spying_loss, mesh=mesh)
    losses = []
    for s in range(steps):
        state, metrics = step(state, batch_at(data, s, batch_size=16, seed=0),
                              key=jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return graphdef, seen, state, losses


def test_sharded_steps_match_single_device(mesh):
    data = token_task(64, seed=0)
    _, single_seen, single, single_losses = run(None, data)
    graphdef, seen, sharded, sharded_losses = run(mesh, data)
    # fp32 with a different summation order over 8 shards. Tolerance rtol 1e-5, atol 1e-6:
    # after 3 Adam steps of lr 1e-2 (Adam's g / sqrt(v) amplifies tiny gradient differences)
    # the largest parameter gap seen is 8e-7 (word embeddings), losses differ by 1 ulp.
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(sharded.step) == STEPS
    # The state comes back replicated over all 8 devices.
    leaf = jax.tree.leaves(sharded.params)[0]
    assert leaf.sharding.spec == P() and len(leaf.sharding.device_set) == 8

    # Inside the compiled sharded step, input_ids [16, 8] is split into 8 shards of [2, 8].
    assert len(seen) == 1 and seen[0].shard_shape((16, 8)) == (2, 8)
    assert len(seen[0].device_set) == 8
    assert single_seen[0].shard_shape((16, 8)) == (16, 8)
    # A batch placed with the step's own batch sharding: 2 rows on each of the 8 devices.
    batch = batch_at(data, 0, batch_size=16, seed=0)
    _, batch_sharding = data_shardings(mesh, "data")
    ids = jax.device_put(batch, batch_sharding)["input_ids"]
    shards = ids.addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(2, 8)}
    assert {s.device for s in shards} == set(mesh.devices.flat)
    np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]),
                                  batch["input_ids"])

    # Eval on the mesh (batch padded to 16 rows, divisible by 8) equals eval on one device.
    held_out = token_task(40, seed=1)
    on_mesh = evaluate(make_eval_step(graphdef, classifier_loss, mesh=mesh), sharded, held_out,
                       batch_size=16)
    on_one = evaluate(make_eval_step(graphdef, classifier_loss), single, held_out, batch_size=16)
    np.testing.assert_allclose(on_mesh["loss"], on_one["loss"], rtol=1e-5, atol=1e-6)
    assert on_mesh["accuracy"] == on_one["accuracy"]


def test_indivisible_batch_is_refused(mesh):
    model = SequenceClassifier(Encoder(EncoderConfig.tiny(num_layers=1), rngs=nnx.Rngs(params=0)),
                               2, rngs=nnx.Rngs(params=1))
    tx = adamw(1e-2, total_steps=20)
    graphdef, state = init_train_state(model, tx)
    step = make_train_step(graphdef, tx, classifier_loss, mesh=mesh)
    batch = batch_at(token_task(24, seed=0), 0, batch_size=12, seed=0)
    with pytest.raises(ValueError, match=r"batch size B=12 is not divisible by the size of mesh "
                                         r"axis 'data' \(8\)"):
        step(state, batch, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"data_axis='batch' is not an axis of the mesh"):
        make_train_step(graphdef, tx, classifier_loss, mesh=mesh, data_axis="batch")
    # Nothing was consumed: the refused call did not donate the state.
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state))
