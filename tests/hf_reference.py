"""Helpers that build independent PyTorch references (tests only; the package never imports torch)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import BertConfig, BertModel


def random_hf_bert(seed: int = 0, *, hidden_act: str = "gelu", layers: int = 3,
                   type_vocab_size: int = 3) -> BertModel:
    """A tiny random HF `BertModel` in eval mode, with weights far from their init values.

    HF initialises BERT with N(0, 0.02) and LayerNorm at (1, 0); at that scale every layer is
    close to identity-after-LayerNorm and a wrong transpose or a swapped LayerNorm can hide
    under 1e-5. Redrawing every tensor at O(1) scale makes each mapping error visible.
    """
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, type_vocab_size=type_vocab_size,
        hidden_act=hidden_act, layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, attn_implementation="eager",
    )
    model = BertModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def hf_forward(model, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray):
    """Every hidden state and the pooler output (None without one) of an HF encoder, as float64."""
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            token_type_ids=torch.from_numpy(token_types.astype(np.int64)),
            output_hidden_states=True,
        )
    hidden = [h.numpy().astype(np.float64) for h in out.hidden_states]
    pooled = getattr(out, "pooler_output", None)
    return hidden, None if pooled is None else pooled.numpy().astype(np.float64)


def random_batch(seed: int, batch: int, length: int, vocab: int, types: int):
    """Random ids, a right-padded mask with varied lengths (one full row), random segments."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, length)).astype(np.int32)
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 0).astype(np.int32)
    token_types = rng.integers(0, max(types, 1), size=(batch, length)).astype(np.int32)
    return ids, mask, token_types


def random_hf_roformer(seed: int = 0, *, layers: int = 3, embedding_size: int | None = None,
                       rotary_value: bool = False, hidden_act: str = "gelu"):
    """A tiny random HF `RoFormerModel` in eval mode, every parameter redrawn at O(1) scale.

    As `random_hf_bert`, so that a wrong transpose or a wrong rotation cannot hide under 1e-5.
    The sinusoidal buffer ``encoder.embed_positions.weight`` (a frozen nn.Embedding weight, so
    it shows up in ``named_parameters``) keeps HF's values: it is the RoPE convention under test.
    """
    from transformers import RoFormerConfig, RoFormerModel

    torch.manual_seed(seed)
    cfg = RoFormerConfig(
        vocab_size=99, hidden_size=32, embedding_size=embedding_size, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=48, max_position_embeddings=40,
        type_vocab_size=3, hidden_act=hidden_act, layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, rotary_value=rotary_value, attn_implementation="eager",
    )
    model = RoFormerModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed_positions.weight"):
                continue
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def hf_roformer_forward(model, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray):
    """Every hidden state of an HF RoFormerModel (which has no pooler), as float64 numpy."""
    hidden, _ = hf_forward(model, ids, mask, token_types)
    return hidden
