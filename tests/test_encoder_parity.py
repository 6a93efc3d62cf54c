"""Parity of the NNX encoder with Hugging Face PyTorch `BertModel` (fp32, atol 1e-5).

References are independent: transformers' own BertModel, loaded from the directory we write
(export) or writing the directory we read (import).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertModel

from hf_reference import hf_forward, random_batch, random_hf_bert

ATOL = 1e-5  # fp32 on CPU; measured max error is ~1e-6 


def _ours(model, ids, mask, token_types):
    import jax.numpy as jnp

    out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                token_type_ids=jnp.asarray(token_types), deterministic=True)
    return [np.asarray(h, np.float64) for h in out.hidden_states], np.asarray(out.pooled, np.float64)


def _assert_close(ours, theirs, mask):
    hidden_o, pooled_o = ours
    hidden_t, pooled_t = theirs
    assert len(hidden_o) == len(hidden_t)
    for layer, (a, b) in enumerate(zip(hidden_o, hidden_t)):
        # Padded query rows are computed too (they attend to real tokens only), as in HF.
        err = np.max(np.abs(a - b))
        assert err < ATOL, f"hidden_states[{layer}] max abs error {err:.2e} >= {ATOL}"
    err = np.max(np.abs(pooled_o - pooled_t))
    assert err < ATOL, f"pooler max abs error {err:.2e}"


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_import_matches_hf_bert(tmp_path, hidden_act, nnx_mode):
    from jaxformer import load_pretrained

    hf = random_hf_bert(seed=3, hidden_act=hidden_act)
    hf.save_pretrained(tmp_path)  # safetensors by default
    model = load_pretrained(tmp_path)
    assert model.config.hidden_act == hidden_act
    ids, mask, tt = random_batch(0, batch=4, length=17, vocab=99, types=3)
    _assert_close(_ours(model, ids, mask, tt), hf_forward(hf, ids, mask, tt), mask)


def test_export_then_hf_load_gives_same_outputs(tmp_path, key):
    from flax import nnx

    from jaxformer import Encoder, EncoderConfig, save_pretrained

    cfg = EncoderConfig.tiny(vocab_size=77, type_vocab_size=2, num_layers=3)
    model = Encoder(cfg, rngs=nnx.Rngs(params=7))
    # Move every parameter away from its init so a mapping error cannot hide.
    state = nnx.state(model, nnx.Param)
    leaves, treedef = __import__("jax").tree.flatten(state)
    import jax

    keys = jax.random.split(key, len(leaves))
    leaves = [l + 0.3 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))

    save_pretrained(model, tmp_path)
    hf, info = BertModel.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    hf.eval()
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    ids, mask, tt = random_batch(1, batch=3, length=11, vocab=77, types=2)
    _assert_close(_ours(model, ids, mask, tt), hf_forward(hf, ids, mask, tt), mask)


def test_round_trip_is_exact(tmp_path):
    from flax import nnx

    from jaxformer import Encoder, EncoderConfig, load_pretrained, save_pretrained
    from jaxformer.models.pretrained import to_hf_state_dict

    model = Encoder(EncoderConfig.tiny(), rngs=nnx.Rngs(params=1))
    save_pretrained(model, tmp_path)
    again = load_pretrained(tmp_path)
    a, b = to_hf_state_dict(model), to_hf_state_dict(again)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_pre_ln_matches_float64_numpy_reference(key):
    """Pre-LN has no HF BertModel twin, so compare with an independent float64 NumPy forward."""
    from flax import nnx

    from jaxformer import Encoder, EncoderConfig
    from jaxformer.models.pretrained import to_hf_state_dict

    cfg = EncoderConfig.tiny(norm="pre", num_layers=2, hidden_act="gelu_new")
    model = Encoder(cfg, rngs=nnx.Rngs(params=2))
    w = {k: v.astype(np.float64) for k, v in to_hf_state_dict(model).items()}
    ids, mask, _ = random_batch(2, batch=2, length=9, vocab=cfg.vocab_size, types=1)

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * w[name + ".weight"] + w[name + ".bias"]

    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def gelu_tanh(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    b, t = ids.shape
    h = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
    h = ln(h + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    heads, d = cfg.num_heads, cfg.head_dim
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}"
        x = ln(h, f"{p}.attention.output.LayerNorm")
        q, k, v = (lin(x, f"{p}.attention.self.{n}").reshape(b, t, heads, d) for n in ("query", "key", "value"))
        s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
        s = np.where(mask[:, None, None, :] == 1, s, -1e30)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        h = h + lin(np.einsum("bhts,bshd->bthd", s, v).reshape(b, t, -1), f"{p}.attention.output.dense")
        x = ln(h, f"{p}.output.LayerNorm")
        h = h + lin(gelu_tanh(lin(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
    h = ln(h, "encoder.final_layer_norm")

    import jax.numpy as jnp

    out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask), deterministic=True)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state, np.float64), h, atol=ATOL, rtol=0)
