"""Bad input gets a clear error naming the argument, the expected value and the actual one."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_reference import random_hf_bert


@pytest.fixture(scope="module")
def tiny():
    from jaxformer import Encoder, EncoderConfig

    return Encoder(EncoderConfig.tiny(), rngs=nnx.Rngs(params=0))


def test_float_token_ids(tiny):
    with pytest.raises(TypeError, match=r"input_ids must be an integer array.*float32"):
        tiny(jnp.ones((2, 5), jnp.float32), deterministic=True)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_wrong_rank(tiny, shape):
    with pytest.raises(ValueError, match=re.escape(f"input_ids must have rank 2 [B, T], got rank {len(shape)}")):
        tiny(jnp.ones(shape, jnp.int32), deterministic=True)


def test_sequence_longer_than_position_table(tiny):
    with pytest.raises(ValueError, match=r"T=65 tokens but max_position_embeddings=64"):
        tiny(jnp.ones((1, 65), jnp.int32), deterministic=True)


def test_mask_shape_mismatch(tiny):
    with pytest.raises(ValueError, match=re.escape("attention_mask has shape (2, 4); expected [B, T] = (2, 5)")):
        tiny(jnp.ones((2, 5), jnp.int32), attention_mask=jnp.ones((2, 4), jnp.int32), deterministic=True)


def test_kernel_mask_shape_mismatch(key):
    from jaxformer.attention import softmax_attention

    q = jnp.ones((2, 3, 4, 8))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 1, 1, 5\); expected \[B\|1, H\|1, T\|1, S\]"):
        softmax_attention(q, q, q, mask=jnp.ones((2, 1, 1, 5), jnp.bool_))


def test_out_of_range_ids(tiny):
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 128\), got values in \[0, 500\]"):
        tiny(jnp.asarray([[0, 500]], jnp.int32), deterministic=True)


def test_dropout_without_key(tiny):
    with pytest.raises(ValueError, match="deterministic=False needs key="):
        tiny(jnp.ones((1, 3), jnp.int32), deterministic=False)


def test_missing_config_json(tmp_path):
    from jaxformer import load_pretrained

    with pytest.raises(FileNotFoundError, match=r"no config.json at .*config.json"):
        load_pretrained(tmp_path)


def test_missing_directory(tmp_path):
    from jaxformer import load_pretrained

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nope")


def test_wrong_tensor_shape_refused_whole(tmp_path):
    """One wrong shape refuses the whole checkpoint, naming the tensor and both shapes."""
    from jaxformer import load_pretrained
    from jaxformer.io import CheckpointError, read_state_dict, write_safetensors

    random_hf_bert(seed=0).save_pretrained(tmp_path)
    tensors = read_state_dict(tmp_path)
    tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((47, 32), np.float32)
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert "nothing was loaded" in msg
    assert "encoder.layer.1.intermediate.dense.weight: expected (32, 48)" in msg
    assert "got (47, 32)" in msg


def test_missing_and_unexpected_tensors_listed(tmp_path):
    from jaxformer import load_pretrained
    from jaxformer.io import CheckpointError, read_state_dict, write_safetensors

    random_hf_bert(seed=0).save_pretrained(tmp_path)
    tensors = read_state_dict(tmp_path)
    del tensors["pooler.dense.bias"]
    tensors["cls.predictions.bias"] = np.zeros((99,), np.float32)
    write_safetensors(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert "missing tensors: pooler.dense.bias" in msg
    assert "unexpected tensors: cls.predictions.bias" in msg
    assert "ignore_prefixes=('cls.',)" in msg


def test_pretraining_checkpoint_with_prefix_and_ignored_heads(tmp_path):
    """A BertForPreTraining-style file ("bert." prefix + "cls." heads) loads with ignore_prefixes."""
    from jaxformer import load_pretrained
    from jaxformer.io import read_state_dict, write_safetensors
    from jaxformer.models.pretrained import to_hf_state_dict

    random_hf_bert(seed=0).save_pretrained(tmp_path)
    plain = read_state_dict(tmp_path)
    prefixed = {f"bert.{k}": v for k, v in plain.items()}
    prefixed["cls.predictions.bias"] = np.zeros((99,), np.float32)
    write_safetensors(prefixed, tmp_path / "model.safetensors")
    model = load_pretrained(tmp_path, ignore_prefixes=("cls.",))
    for name, value in to_hf_state_dict(model).items():
        np.testing.assert_array_equal(value, plain[name], err_msg=name)


def test_pickle_without_opt_in(tmp_path):
    import torch

    from jaxformer import load_pretrained
    from jaxformer.io import CheckpointError

    hf = random_hf_bert(seed=0)
    hf.config.to_json_file(str(tmp_path / "config.json"))
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_pretrained(tmp_path)
    model = load_pretrained(tmp_path, allow_pickle=True)  # the explicit opt-in works
    assert model.config.num_layers == 3


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"hidden_size": 30}, r"EncoderConfig.hidden_size=30 must be divisible by num_heads=4"),
        ({"hidden_act": "gelu2"}, r"EncoderConfig.hidden_act must be one of .*got 'gelu2'"),
        ({"norm": "sandwich"}, r"EncoderConfig.norm must be one of \['post', 'pre', 'none'\], got 'sandwich'"),
        ({"hidden_dropout": 1.0}, r"EncoderConfig.hidden_dropout must be in \[0, 1\), got 1.0"),
        ({"num_layers": 0}, r"EncoderConfig.num_layers must be a positive int, got 0"),
        ({"pad_token_id": 500}, r"EncoderConfig.pad_token_id must be in \[0, vocab_size=128\), got 500"),
    ],
)
def test_config_validation_names_the_field(changes, pattern):
    from jaxformer import EncoderConfig

    with pytest.raises(ValueError, match=pattern):
        EncoderConfig.tiny(**changes)


def test_config_from_hf_unsupported_type(tmp_path):
    from jaxformer import EncoderConfig

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported; expected one of \['bert'\] \(position='absolute'\) or \['roformer'\] \(position='rope'\)"):
        EncoderConfig.from_hf(tmp_path)


def test_config_from_hf_malformed_json(tmp_path):
    from jaxformer import EncoderConfig

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        EncoderConfig.from_hf(tmp_path)
