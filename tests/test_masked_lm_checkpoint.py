"""Masked-LM checkpoints against transformers' `BertForMaskedLM` (the independent reference).

Both directions: an HF model with O(1) random weights is saved by transformers and loaded by
`load_masked_lm`; our `MaskedLM` is saved by `save_masked_lm` and loaded by transformers. The
logits must agree to atol 1e-4 (fp32, both sides at full matmul precision; logits are O(10)).
The gathered-positions path (`positions=`) must equal the full logits at those positions.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxformer.io import CheckpointError, read_state_dict, write_safetensors
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.pretrained import load_pretrained
from jaxformer.models.pretrained_lm import load_masked_lm, save_masked_lm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4


def _random_hf_mlm(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, type_vocab_size=2,
        attn_implementation="eager")
    model = transformers.BertForMaskedLM(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3
            base = 1.0 if "LayerNorm.weight" in name else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=gen))
    return model


def _batch(seed: int = 0, b: int = 3, t: int = 11, vocab: int = 97):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    mask[0, 7:] = 0
    return ids, mask


def _hf_logits(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                    attention_mask=torch.from_numpy(mask.astype(np.int64)))
    return out.logits.numpy().astype(np.float64)


def _our_logits(model, ids, mask, **kw):
    return np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                            deterministic=True, **kw), np.float64)


def test_hf_masked_lm_loads_with_equal_logits(tmp_path):
    hf = _random_hf_mlm()
    hf.save_pretrained(tmp_path)
    ours = load_masked_lm(tmp_path)
    ids, mask = _batch()
    real = mask.astype(bool)
    np.testing.assert_allclose(_our_logits(ours, ids, mask)[real], _hf_logits(hf, ids, mask)[real],
                               atol=ATOL, rtol=0)


def test_saved_masked_lm_loads_in_transformers(tmp_path):
    cfg = EncoderConfig.tiny(vocab_size=97, use_pooler=False, max_position_embeddings=40)
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(3)), rngs=nnx.Rngs(4))
    # Move the head off its init (bias 0, LN (1, 0)) so a mis-mapped tensor shows.
    state = nnx.state(model.head, nnx.Param)
    noisy = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(5), x.shape, x.dtype),
                         state)
    nnx.update(model.head, noisy)
    save_masked_lm(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    hf, info = transformers.BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask = _batch(1)
    real = mask.astype(bool)
    np.testing.assert_allclose(_hf_logits(hf.eval(), ids, mask)[real],
                               _our_logits(model, ids, mask)[real], atol=ATOL, rtol=0)
    # Round trip through our loader is exact.
    again = load_masked_lm(tmp_path)
    np.testing.assert_array_equal(_our_logits(again, ids, mask), _our_logits(model, ids, mask))
    # The encoder of a masked-LM directory loads alone: its cls. head is recognised, not stray.
    encoder = load_pretrained(tmp_path)
    np.testing.assert_array_equal(np.asarray(encoder.embed.word.embedding[...]),
                                  np.asarray(model.encoder.embed.word.embedding[...]))


def test_positions_gather_equals_full_logits():
    cfg = EncoderConfig.tiny(vocab_size=97, use_pooler=False)
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    ids, mask = _batch(2)
    positions = np.array([[0, 3, 3], [10, 1, 2], [4, 5, 6]], np.int32)
    full = _our_logits(model, ids, mask)
    picked = _our_logits(model, ids, mask, positions=jnp.asarray(positions))
    want = np.take_along_axis(full, positions[:, :, None], axis=1)
    np.testing.assert_allclose(picked, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"positions: expected shape \[B=3, P\]"):
        model(jnp.asarray(ids), attention_mask=jnp.asarray(mask), deterministic=True,
              positions=jnp.zeros((2, 4), jnp.int32))


def test_head_mismatch_is_refused_whole(tmp_path):
    hf = _random_hf_mlm()
    hf.save_pretrained(tmp_path)
    tensors = read_state_dict(tmp_path)
    tensors.pop("cls.predictions.transform.LayerNorm.weight")
    tensors["cls.predictions.bias"] = np.zeros((5,), np.float32)
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_masked_lm(tmp_path)
    text = str(err.value)
    assert "nothing was loaded" in text
    assert "cls.predictions.transform.LayerNorm.weight" in text
    assert "cls.predictions.bias: expected (97,), got (5,)" in text
