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
# # UniLM: seq2seq with a BERT encoder, and cached decoding (Su Jianlin, kexue.fm post 6933)
#
# Run: `.venv/bin/python notebooks/unilm.py` (about 30 s on 2 CPU cores), or open it in Jupyter
# via jupytext. Nothing is trained here. It shows
#
# 1. **the UniLM mask** (Dong et al. 2019, arXiv:1905.03197, §2.3; bert4keras' `unilm_mask`):
#    a row ``[CLS] source [SEP] target [SEP]`` with segment ids 0 then 1; source tokens see the
#    whole source, target token t the source and targets 0..t. Pictured for a padded batch and
#    checked against an explicit loop over (query, key) pairs;
# 2. **cached decoding equals a full recompute**: a tiny random `MaskedLM` decodes step by step
#    with the key/value cache (`prefill`, `extend`), and at every step its next-token logits are
#    compared with a full forward pass of ``[CLS] source [SEP] target[:t]`` under the mask;
# 3. **beam 1 equals greedy**, and wider beams return sorted hypotheses;
# 4. **claim R2-gen** (WoBERT vs char BERT as generators), read from the results of
#    `python -m benchmarks.exp_unilm_r2` when they exist.
#
# Shape letters: B batch, T tokens, S source tokens, K beams, V vocabulary.

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
from jaxformer.models.lm import MaskedLM
from jaxformer.models.unilm_decode import DecodeConfig, decode, extend, prefill
from jaxformer.unilm import unilm_mask

T0 = time.perf_counter()
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()

# %% [markdown]
# ## 1. The mask, pictured and checked
#
# Two rows: ``[CLS] a b [SEP] x y [SEP]`` (source 4 tokens, target 3) and a shorter one,
# ``[CLS] a [SEP] x [SEP]``, padded by 2 (padding carries segment id 0, as tokenizers write
# it). The rule is ``mask[i, j] = c[j] <= c[i]`` with ``c`` the cumulative sum of the segment
# ids; padding keys are hidden from every query and a padding query sees only itself.

# %%
tokens = [["[CLS]", "a", "b", "[SEP]", "x", "y", "[SEP]"],
          ["[CLS]", "a", "[SEP]", "x", "[SEP]", "pad", "pad"]]
segments = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]], np.int32)
real = np.array([[1] * 7, [1] * 5 + [0] * 2], np.int32)
mask = np.asarray(unilm_mask(jnp.asarray(segments), jnp.asarray(real)))  # [B, 1, T, T]


def explicit_mask(types: np.ndarray, real: np.ndarray) -> np.ndarray:
    """UniLM's definition, one (query, key) pair at a time: an independent reference."""
    b, t = types.shape
    out = np.zeros((b, 1, t, t), bool)
    for r in range(b):
        for i in range(t):
            for j in range(t):
                if not real[r, i]:
                    out[r, 0, i, j] = i == j  # a padding query sees itself only
                elif real[r, j]:
                    source_query = types[r, i] == 0
                    out[r, 0, i, j] = (types[r, j] == 0) if source_query else (
                        types[r, j] == 0 or j <= i)
    return out


assert (mask == explicit_mask(segments, real)).all()
print("unilm_mask equals the explicit loop on", mask.shape, "(B, 1, T, T)")

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
for r, ax in enumerate(axes):
    ax.imshow(mask[r, 0], cmap="Blues", vmin=0, vmax=1.4)
    ax.set_xticks(range(7), tokens[r], rotation=45, fontsize=8)
    ax.set_yticks(range(7), tokens[r], fontsize=8)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(f"row {r}: segments {segments[r].tolist()}", fontsize=9)
fig.suptitle("UniLM mask (blue: may attend)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Cached decoding equals a full recompute, step by step
#
# A tiny random `MaskedLM` (2 blocks, width 32, V = 64, no dropout). `prefill` runs the padded
# sources once and keeps every layer's keys and values; `extend` feeds one target token per
# step at slot ``S + t`` with position ``len(source) + t`` and segment 1. The reference runs
# the *unpadded* row ``[CLS] source [SEP] target[:t]`` through the whole model under
# `unilm_mask` and reads the logits at its last position: O(T²) per step against O(T).

# %%
cfg = EncoderConfig.tiny(vocab_size=64, hidden_dropout=0.0, attention_dropout=0.0)
model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
CLS, SEP, PAD = 2, 3, 0
sources = np.array([[CLS, 10, 11, 12, 13, SEP], [CLS, 20, SEP, PAD, PAD, PAD]], np.int32)
source_mask = (sources != PAD).astype(np.int32)
target = np.array([[30, 31, 32, 33, 34], [40, 41, 42, 43, 44]], np.int32)


def full_logits(source: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    row = np.concatenate([source, prefix])[None].astype(np.int32)
    types = np.concatenate([np.zeros(len(source)), np.ones(len(prefix))]).astype(np.int32)[None]
    out = model(jnp.asarray(row), attention_mask=unilm_mask(jnp.asarray(types)),
                token_type_ids=jnp.asarray(types), deterministic=True)
    return np.asarray(out[0, -1])


graphdef, state = nnx.split(model)
step_fn = jax.jit(lambda st, c, tok, t: extend(nnx.merge(graphdef, st), c, tok, t))
logits, cache = prefill(model, jnp.asarray(sources), jnp.asarray(source_mask),
                        max_length=target.shape[1])
worst = 0.0
for t in range(target.shape[1]):
    diffs = [np.abs(np.asarray(logits[b]) - full_logits(sources[b, :source_mask[b].sum()],
                                                        target[b, :t])).max() for b in range(2)]
    print(f"step {t}: max |cached - recompute| over V logits = {max(diffs):.2e}")
    worst = max(worst, *diffs)
    logits, cache = step_fn(state, cache, jnp.asarray(target[:, t]), jnp.int32(t))
assert worst < 1e-4, worst
print(f"largest difference over {target.shape[1]} steps and 2 rows: {worst:.2e}")

# %% [markdown]
# ## 3. Beam 1 equals greedy; wider beams
#
# `decode` runs greedy argmax for K = 1 by default; ``greedy=False`` runs the beam search with
# one beam, which must pick the same tokens. Scores are ``log P / length ** α``, and beams
# come back sorted; a wider beam usually (not always: the search is not exhaustive) finds a
# better-scoring hypothesis than greedy.

# %%
config = DecodeConfig(max_length=6, eos_id=SEP, pad_id=PAD, beam_size=1,
                      suppress_ids=(PAD, CLS))
greedy = decode(model, sources, source_mask, config=config)
beam1 = decode(model, sources, source_mask, config=config, greedy=False)
assert (np.asarray(greedy.tokens) == np.asarray(beam1.tokens)).all()
print("greedy tokens:", np.asarray(greedy.tokens[:, 0]).tolist())
print("beam-1 tokens:", np.asarray(beam1.tokens[:, 0]).tolist())
for k in (2, 3):
    out = decode(model, sources, source_mask, config=DecodeConfig(
        max_length=6, eos_id=SEP, pad_id=PAD, beam_size=k, suppress_ids=(PAD, CLS)))
    scores = np.asarray(out.scores)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # sorted, best first
    best = ", ".join(f"{x:.3f}" for x in scores[:, 0])
    ref = ", ".join(f"{x:.3f}" for x in np.asarray(greedy.scores[:, 0]))
    print(f"beam {k}: best score per row {best} (greedy {ref})")

# %% [markdown]
# ## 4. Claim R2-gen: WoBERT vs char BERT as UniLM generators
#
# Post 2 (WoBERT, post 7758) reports CSL title generation at beam 1, char-split scores: BERT
# Rouge-L 63.81 / BLEU 45.52, WoBERT 66.38 / 47.76. `python -m benchmarks.exp_unilm_r2
# --data-dir ../shared/data` fine-tunes the kit's 2-layer char BERT and WoBERT pair on CSL
# keywords and CMRC2018 question generation (3 seeds, beams 1-3); its table is shown here when
# it has been run.

# %%
found = sorted((ROOT / "results").glob("*/unilm_r2.json"))
if not found:
    print("no results/*/unilm_r2.json yet: run `python -m benchmarks.exp_unilm_r2 "
          "--data-dir ../shared/data`")
for path in found:
    report = json.loads(path.read_text("utf-8"))
    print(f"{path.relative_to(ROOT)} ({report['environment'].get('device_kind')})")
    print(f"{'task':9} {'model':10} {'beam':>4} {'Rouge-L':>14} {'BLEU':>14} {'tok/s':>8}")
    for r in report["rows"]:
        print(f"{r['task']:9} {r['model']:10} {r['beam']:>4} {r['rouge-l']:>14} {r['bleu']:>14} "
              f"{r['tokens_per_s']:>8.0f}")
    for note in report["notes"][:2]:
        print("-", note)

# %%
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
