# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # BERT-of-Theseus: compression by module replacement (Su Jianlin, kexue.fm post 7575)
#
# Run: `.venv/bin/python notebooks/theseus.py` (about 30 s on 2 CPU cores), or open it in
# Jupyter via jupytext. Nothing large is trained here. It shows
#
# 1. **the replacement mechanics** on a tiny encoder (Xu et al. 2020, arXiv:2002.02925; Su,
#    https://kexue.fm/archives/7575): a predecessor of N = 4 blocks is cut into M = 2 modules of
#    r = 2 blocks, and each module is replaced by one successor block with probability p;
# 2. **the invariants the tests check**: p = 0 is the predecessor, p = 1 the successor, one
#    compiled program whatever the coins draw, the predecessor bit-identical after training,
#    the same key giving the same draws;
# 3. **the schedules**: constant p (switched to 1 after a step), the paper's linear curriculum,
#    and the post's untested continuous and annealed ε (labelled as beyond the post);
# 4. **claim R5** (Theseus beats truncation), read from the committed results of
#    `python -m benchmarks.exp_theseus_r5`, next to Su's BERT-base numbers.
#
# Su's equation (1), with s = 1 - ε the successor's weight for module i:
#
# $$x^{(i)} = (1-s_i)\,x_p^{(i)} + s_i\,x_s^{(i)},\qquad s_i\sim\mathrm{Bernoulli}(p),\qquad
#   x_p^{(i+1)} = F_p^{(i+1)}(x^{(i)}),\quad x_s^{(i+1)} = F_s^{(i+1)}(x^{(i)})$$
#
# Shape letters: B batch, T tokens, J slots (modules, plus one for the embeddings when drawn).

# %%
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.models.theseus import (TheseusClassifier, successor_classifier, successor_filter,
                                      truncate_encoder)
from jaxformer.replacement import replacement_rate, successor_weights
from jaxformer.tasks.theseus import TheseusConfig, TheseusTask, with_step
from jaxformer.train.optim import adamw
from jaxformer.train.step import init_train_state, make_train_step

T0 = time.perf_counter()
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()

# %% [markdown]
# ## 1. A predecessor, a successor, and the mixed forward pass
#
# The predecessor is a fine-tuned `SequenceClassifier` (here: freshly drawn, 4 blocks); the
# successor starts as its first 2 blocks (`truncate_encoder`, the official code's start; Su's
# code takes the first blocks of the *pretrained* encoder instead). With `embeddings=True` the
# embedding layer is slot 0 of the draw, as in Su's code.

# %%
cfg = EncoderConfig.tiny(num_layers=4, hidden_dropout=0.1, attention_dropout=0.1)
predecessor = SequenceClassifier(Encoder(cfg, rngs=nnx.Rngs(0)), 3, rngs=nnx.Rngs(1))
successor = Encoder(cfg.replace(num_layers=2), rngs=nnx.Rngs(7))  # distinct, to tell them apart
model = TheseusClassifier(predecessor, successor, embeddings=True)
print(f"N = {cfg.num_layers} predecessor blocks, M = {model.num_modules} modules of r = "
      f"{model.group} blocks, J = {model.num_slots} slots (embeddings + modules)")

rng = np.random.default_rng(0)
ids = jnp.asarray(rng.integers(5, 100, (4, 9)), jnp.int32)
mask = jnp.ones((4, 9), jnp.int32)
key = jax.random.key(3)

# %% [markdown]
# ## 2. The invariants
#
# **p = 0 is the predecessor.** All weights 0, dropout on, same key: the predecessor's encoder
# and head draw from the same streams as the predecessor alone, so the logits agree bit for
# bit (eager, `compute="select"`: the same operations in the same order).

# %%
zeros = jnp.zeros(model.num_slots, jnp.float32)
mixed = model(ids, attention_mask=mask, deterministic=False, key=key, weights=zeros,
              compute="select")
alone = predecessor(ids, attention_mask=mask, deterministic=False, key=key)
print("p = 0: max |theseus - predecessor| =", float(jnp.max(jnp.abs(mixed - alone))))
assert np.array_equal(np.asarray(mixed), np.asarray(alone))

# %% [markdown]
# **p = 1 is the successor**, and so is inference (`weights=None`), as Su's
# `K.in_train_phase(output, target)`. "The successor" is the model `successor_classifier`
# assembles: the successor's embeddings and blocks under the predecessor's (shared, frozen)
# head.

# %%
student = successor_classifier(model)
ones = jnp.ones(model.num_slots, jnp.float32)
want = student(ids, attention_mask=mask, deterministic=True)
for name, w in (("p = 1", ones), ("inference", None)):
    got = model(ids, attention_mask=mask, deterministic=True, weights=w, compute="select")
    print(f"{name}: max |theseus - successor alone| =", float(jnp.max(jnp.abs(got - want))))
    assert np.array_equal(np.asarray(got), np.asarray(want))

# %% [markdown]
# **One compiled program whatever the coins draw.** The weights are an array argument, so
# new draws never retrace. With `compute="cond"` every slot is an XLA `conditional`: only the
# chosen branch runs (the predecessor's r blocks *or* the successor's one); `"select"` runs
# both and keeps one, which per-example draws and continuous ε need.

# %%
fwd = jax.jit(lambda w, k: model(ids, attention_mask=mask, deterministic=False, key=k,
                                 weights=w, compute="cond"))
for step in range(5):
    w = successor_weights(jax.random.fold_in(key, step), 0.5, num_slots=model.num_slots)
    fwd(w, key)
    print(f"step {step}: weights {np.asarray(w).astype(int)}")
print("compilations:", fwd._cache_size())
hlo = fwd.lower(zeros, key).compile().as_text()
select_hlo = jax.jit(lambda w, k: model(ids, attention_mask=mask, deterministic=False, key=k,
                                        weights=w, compute="select")).lower(zeros, key) \
    .compile().as_text()
print("conditionals in the compiled forward: cond", hlo.count("conditional("), "| select",
      select_hlo.count("conditional("))

# %% [markdown]
# **The same key gives the same draws**: slot j of step t draws from
# `fold_in(fold_in(root, t), j)`, so a resumed run replays its coins, and adding the embeddings
# to the draw does not move the modules' coins.

# %%
k7 = jax.random.fold_in(key, 7)
print(np.asarray(successor_weights(k7, 0.5, num_slots=3)),
      np.asarray(successor_weights(k7, 0.5, num_slots=3)))

# %% [markdown]
# **The predecessor is bit-identical after training.** Only the successor's blocks and (drawn)
# embeddings go to the optimiser (`successor_filter` as the train step's `trainable`); the
# predecessor and the head ride along in the state's frozen part.

# %%
task = TheseusTask(TheseusConfig(embeddings=True), num_labels=3)
labels = jnp.asarray(rng.integers(0, 3, 32), jnp.int32)
data = {"input_ids": np.asarray(rng.integers(5, 100, (32, 9)), np.int32),
        "attention_mask": np.ones((32, 9), np.int32), "labels": np.asarray(labels)}
before = jax.tree.map(np.array, nnx.state(model.predecessor))
succ_before = jax.tree.map(np.array, nnx.state(model.successor.blocks))
tx = adamw(1e-2, total_steps=20)
graphdef, state = init_train_state(model, tx, trainable=successor_filter(model))
step_fn = make_train_step(graphdef, tx, task.loss_fn, trainable=successor_filter(model))
shares = []
for s in range(20):
    rows = np.arange(8) + (s * 8) % 32
    state, metrics = step_fn(state, with_step({k: v[rows] for k, v in data.items()}, s),
                             key=jax.random.key(0))
    shares.append(float(metrics["successor_share"]))
trained = nnx.merge(graphdef, state.params, state.rest)
same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(nnx.state(trained.predecessor)),
                                                  jax.tree.leaves(before), strict=True))
moved = any(not np.array_equal(a, b) for a, b in zip(
    jax.tree.leaves(nnx.state(trained.successor.blocks)), jax.tree.leaves(succ_before),
    strict=True))
print(f"predecessor bit-identical: {same}; successor blocks changed: {moved}; "
      f"share of successor slots per step: {np.round(shares[:8], 2)} ...; "
      f"compilations: {step_fn.jitted._cache_size()}")
assert same and moved

# %% [markdown]
# ## 3. Schedules
#
# Constant p (Su: 0.5, "no tuning needed"), switched to 1 after a step (the official code's
# `ConstantReplacementScheduler`); the paper's curriculum `p_t = min(k t + b, 1)`; and, beyond
# the post, a continuous ε ~ U(0, 1) and an annealed, deterministic ε = 1 - p_t, which Su
# suggests but did not test.

# %%
t = jnp.arange(0, 2000)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(t, replacement_rate(t, schedule="constant", rate=0.5, replace_until=1500),
        label="constant 0.5, then 1 from step 1500")
ax.plot(t, replacement_rate(t, schedule="linear", rate=0.3, slope=0.0006),
        label="linear: min(0.0006 t + 0.3, 1)")
ax.set_xlabel("step t")
ax.set_ylabel("p_t (successor probability)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
uniform = successor_weights(key, 0.5, num_slots=3, mix="uniform")
anneal = successor_weights(key, replacement_rate(400, schedule="linear", rate=0.3,
                                                 slope=0.0006), num_slots=3, mix="anneal")
print("beyond the post: continuous s ~ U(0,1):", np.round(np.asarray(uniform), 3),
      "| annealed s = p_t at t = 400:", np.round(np.asarray(anneal), 3))

# %% [markdown]
# ## 4. Claim R5: Theseus vs truncation
#
# Su's IFLYTEK accuracies (BERT-base, CLUE dev): 12 layers 60.11; truncated to 6 58.99,
# Theseus 6 59.61; truncated to 3 57.96, Theseus 3 59.36. The kit's measurement (a 6-block
# char BERT pretrained on 2 CPU cores, compressed to 3 and 2 blocks; FewCLUE IFLYTEK and
# THUCNews headlines; 3 seeds) is read from `results/`, when the experiment has been run.

# %%
su = {"12 layers": 60.11, "truncated to 6": 58.99, "Theseus 6": 59.61,
      "truncated to 3": 57.96, "Theseus 3": 59.36}
print("Su (IFLYTEK dev, BERT-base):", su)
reports = sorted((ROOT / "results").glob("*/theseus_r5.json"))
if not reports:
    print("no results/*/theseus_r5.json yet: run python -m benchmarks.exp_theseus_r5 "
          "--data-dir ../shared/data --prepared .devdata/prepared")
for path in reports:
    report = json.loads(path.read_text("utf-8"))
    print(f"\n{path.parent.name}: {report['command']}")
    print(f"{'task':9} {'variant':17} {'blocks':>6} {'seeds':>5} {'test acc %':>14} "
          f"{'speed-up':>8}")
    for r in report["rows"]:
        speedup = "" if r.get("speedup") is None else f"{r['speedup']:.2f}"
        print(f"{r['task']:9} {r['variant']:17} {r['blocks']:>6} {r['seeds']:>5} "
              f"{r['test_acc']:>14} {speedup:>8}")
    for note in report["notes"]:
        if "truncation" in note or "curriculum" in note:
            print(" -", note)

# %%
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
