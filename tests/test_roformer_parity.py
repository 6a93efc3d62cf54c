"""RoFormer (Su et al. 2021) as ``EncoderConfig(position="rope")``: parity with HF `RoFormerModel`.

References are independent: transformers' own RoFormerModel (its sinusoidal buffer and its
``apply_rotary_position_embeddings``), random at O(1) scale so that a wrong mapping, pairing or
frequency cannot hide under the fp32 tolerance.

Tokenization: the public Chinese RoFormer / WoBERT checkpoints pre-tokenize with jieba into
words before WordPiece. That word-level step is a later issue; here the CLI test uses the plain
BERT WordPiece tokenizer built from ``vocab.txt``, which is what jaxformer does today.
"""

import io
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import RoFormerModel

from hf_reference import hf_roformer_forward, random_batch, random_hf_roformer

ATOL = 1e-5  # fp32 on CPU, as tests/test_encoder_parity.py

VARIANTS = {
    "plain": {},
    "embedding-project": {"embedding_size": 16},
    "rotary-value": {"rotary_value": True},
}


def _ours(model, ids, mask, token_types):
    out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                token_type_ids=jnp.asarray(token_types), deterministic=True)
    assert out.pooled is None  # RoFormerModel has no pooler
    return [np.asarray(h, np.float64) for h in out.hidden_states]


def _max_errors(ours, theirs):
    assert len(ours) == len(theirs)
    return [float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs)]


def _assert_close(ours, theirs):
    for layer, err in enumerate(_max_errors(ours, theirs)):
        assert err < ATOL, f"hidden_states[{layer}] max abs error {err:.2e} >= {ATOL}"


def _perturbed(cfg, key, seed=7):
    """An `Encoder` with every parameter moved O(1) away from its init."""
    from jaxformer import Encoder

    model = Encoder(cfg, rngs=nnx.Rngs(params=seed))
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    keys = jax.random.split(key, len(leaves))
    leaves = [l + 0.3 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_matches_hf_roformer(tmp_path, variant, nnx_mode):
    from jaxformer import load_pretrained

    hf = random_hf_roformer(seed=3, **VARIANTS[variant])
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    cfg = model.config
    assert (cfg.position, cfg.use_pooler, cfg.rope_layout) == ("rope", False, "interleaved")
    assert cfg.max_position_embeddings == 40 and cfg.rotary_value == hf.config.rotary_value
    assert cfg.embedding_width == hf.config.embedding_size
    assert (model.embed.project is None) == (cfg.embedding_width == cfg.hidden_size)
    ids, mask, tt = random_batch(0, batch=4, length=17, vocab=99, types=3)
    _assert_close(_ours(model, ids, mask, tt), hf_roformer_forward(hf, ids, mask, tt))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_then_hf_load_gives_same_outputs(tmp_path, key, variant):
    from jaxformer import EncoderConfig, load_pretrained, save_pretrained

    cfg = EncoderConfig.tiny(vocab_size=77, num_layers=3, position="rope", use_pooler=False,
                             **VARIANTS[variant])
    model = _perturbed(cfg, key)
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["RoFormerModel"]
    hf, info = RoFormerModel.from_pretrained(tmp_path, output_loading_info=True,
                                             attn_implementation="eager")
    hf.eval()
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    ids, mask, tt = random_batch(1, batch=3, length=11, vocab=77, types=2)
    ours = _ours(model, ids, mask, tt)
    _assert_close(ours, hf_roformer_forward(hf, ids, mask, tt))
    # ... and back: the directory we wrote loads as the same model (its buffer checks out too).
    _assert_close(_ours(load_pretrained(tmp_path), ids, mask, tt), ours)


def test_pickle_checkpoint_with_prefix_and_mlm_head(tmp_path):
    """The public Chinese RoFormer format: pytorch_model.bin with ``roformer.`` names and ``cls.``
    MLM heads, read by the torch-free unpickler only with allow_pickle=True."""
    from jaxformer import load_pretrained
    from jaxformer.io import CheckpointError
    from jaxformer.models.pretrained import to_hf_state_dict

    hf = random_hf_roformer(seed=5)
    hf.config.to_json_file(str(tmp_path / "config.json"))
    state = {f"roformer.{k}": v for k, v in hf.state_dict().items()}
    state["cls.predictions.bias"] = torch.zeros(99)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"unexpected tensors: cls\.predictions\.bias"):
        load_pretrained(tmp_path, allow_pickle=True)
    model = load_pretrained(tmp_path, allow_pickle=True, ignore_prefixes=("cls.",))
    plain = {k: v.numpy() for k, v in hf.state_dict().items()}
    ours = to_hf_state_dict(model)
    assert set(plain) - set(ours) == {"encoder.embed_positions.weight"}
    for name, value in ours.items():
        np.testing.assert_array_equal(value, plain[name], err_msg=name)
    ids, mask, tt = random_batch(2, batch=2, length=9, vocab=99, types=3)
    _assert_close(_ours(model, ids, mask, tt), hf_roformer_forward(hf, ids, mask, tt))


def test_sinusoidal_buffer_is_the_kernels_rotation(tmp_path):
    """HF's buffer is read off our kernel (rotating each pair's (1, 0)), and a checkpoint whose
    buffer disagrees with the config's RoPE base is refused as a whole."""
    from jaxformer import load_pretrained
    from jaxformer.io import CheckpointError, read_state_dict, write_safetensors
    from jaxformer.models.pretrained import kernel_sinusoidal_table, sinusoidal_table

    hf = random_hf_roformer(seed=1, layers=1)
    buffer = hf.encoder.embed_positions.weight.detach().numpy().astype(np.float64)
    np.testing.assert_allclose(sinusoidal_table(40, 8), buffer, atol=1e-7, rtol=0)
    hf.save_pretrained(tmp_path)
    cfg = load_pretrained(tmp_path).config
    for layout in ("interleaved", "half"):  # the table is the same; only the pairing differs
        got = kernel_sinusoidal_table(cfg.replace(rope_layout=layout), 40)
        np.testing.assert_allclose(got, buffer, atol=1e-5, rtol=0)
    tensors = read_state_dict(tmp_path)
    tensors["encoder.embed_positions.weight"] = sinusoidal_table(40, 8, base=500.0).astype(np.float32)
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"embed_positions.weight differs from the RoPE angles "
                                              r"of rope_base=10000.0.*nothing was loaded"):
        load_pretrained(tmp_path)


def test_rope_scores_depend_on_relative_position_only(key):
    """Shifting every position by the same offset leaves a RoFormer's outputs unchanged (the
    property RoPE is built for; an absolute table would not have it)."""
    from jaxformer import EncoderConfig

    model = _perturbed(EncoderConfig.tiny(position="rope", use_pooler=False), key)
    ids, mask, _ = random_batch(3, batch=2, length=12, vocab=128, types=1)
    base = jnp.broadcast_to(jnp.arange(12, dtype=jnp.int32)[None, :], ids.shape)
    run = lambda pos: model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),  # noqa: E731
                            position_ids=pos, deterministic=True).last_hidden_state
    shifted = run(base + 1000)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(run(base)), atol=2e-3, rtol=0)
    # The stage hooks still work without positions (default 0..T-1).
    from jaxformer.attention import padding_mask

    h = model.embed(jnp.asarray(ids), deterministic=True)
    for block in model.blocks:
        h = block(h, mask=padding_mask(jnp.asarray(mask)), deterministic=True)
    np.testing.assert_array_equal(np.asarray(h), np.asarray(run(None)))


def test_cli_embed_on_a_saved_roformer(tmp_path, key, monkeypatch, capsys):
    """`jaxformer embed` on a RoFormer directory with a vocab.txt built here (WordPiece only;
    jieba word segmentation of the Chinese RoFormer tokenizer is a later issue)."""
    from jaxformer import EncoderConfig, save_pretrained
    from jaxformer.cli import main

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "我", "们", "爱", "北", "京", "天",
             "安", "门", "hello", "world", "##s", "，", "。"]
    cfg = EncoderConfig.tiny(vocab_size=len(vocab), position="rope", use_pooler=False,
                             max_position_embeddings=24)
    save_pretrained(_perturbed(cfg, key), tmp_path)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "我们爱北京天安门。\nhello worlds\n\n".encode())))
    out = tmp_path / "e.npy"
    assert main(["embed", "--model", str(tmp_path), "--normalize", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    got = np.load(out)
    assert got.shape == (3, 32) and np.all(np.isfinite(got))
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert "max_length=24" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello\n")))
    code = main(["embed", "--model", str(tmp_path), "--pooling", "pooler", "--out", str(out)])
    assert code == 2 and "has no pooler" in capsys.readouterr().err


def test_config_round_trip_and_preset():
    from jaxformer import EncoderConfig

    base = EncoderConfig.roformer_base()
    assert (base.vocab_size, base.hidden_size, base.num_layers, base.num_heads,
            base.intermediate_size, base.max_position_embeddings) == (50000, 768, 12, 12, 3072, 1536)
    for cfg in (base, EncoderConfig.tiny(position="rope", use_pooler=False, embedding_size=16,
                                         rotary_value=True)):
        assert EncoderConfig.from_hf(cfg.to_hf_dict()) == cfg


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"rope_layout": "spiral"},
         r"EncoderConfig.rope_layout must be one of \['interleaved', 'half'\], got 'spiral'"),
        ({"rotary_value": True}, r"EncoderConfig.rotary_value=True needs position='rope'"),
        ({"position": "rope", "hidden_size": 36, "num_heads": 4}, r"head dim .*=9 must be even"),
        ({"embedding_size": 0}, r"EncoderConfig.embedding_size must be None or a positive int"),
        ({"rope_base": 0.5}, r"EncoderConfig.rope_base must be > 1"),
    ],
)
def test_bad_rope_config_names_the_field(changes, pattern):
    from jaxformer import EncoderConfig

    with pytest.raises(ValueError, match=pattern):
        EncoderConfig.tiny(**changes)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"position": "rope"}, r"EncoderConfig.use_pooler=True has no HF RoFormerModel equivalent"),
        ({"position": "rope", "use_pooler": False, "rope_layout": "half"},
         r"EncoderConfig.rope_layout='half' has no HF RoFormerModel equivalent"),
        ({"embedding_size": 16}, r"EncoderConfig.embedding_size=16 has no HF BertModel equivalent"),
    ],
)
def test_unexportable_configs_name_the_field(changes, pattern):
    from jaxformer import EncoderConfig

    with pytest.raises(ValueError, match=pattern):
        EncoderConfig.tiny(**changes).to_hf_dict()
