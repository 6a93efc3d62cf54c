"""Language-model heads on an `Encoder`: masked LM (bidirectional) and causal LM (decoder-only).

Shape letters: B batch, T tokens, P predicted positions, E width, E_emb embedding width, V
vocabulary.

`LMHead` is BERT's prediction head (Devlin et al. 2019; HF ``BertLMPredictionHead``): a Dense
``E -> E_emb``, the FFN's activation, LayerNorm, then logits against the *tied* word-embedding
table plus a per-token bias. `MaskedLM` puts it on a bidirectional encoder; `CausalLM` on one
built with ``causal=True``, where position t predicts token t + 1. Which attention runs inside
(``"softmax"`` or ``"linear"``) is the config's business, so one head serves both sides of
post 8610's comparison.
"""

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from jaxformer import functional as F
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.parametrization import dense, norm, readout_multiplier


class LMHead(nnx.Module):
    """``logits = LN(act(h W + b)) Embᵀ + bias``, tied to the encoder's word embedding."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.transform = dense(cfg, cfg.hidden_size, cfg.embedding_width, "lm_transform",
                               rngs=rngs)
        self.norm = norm(cfg, cfg.embedding_width)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.dtype(cfg.param_dtype)))
        self.precision = cfg.matmul_precision
        self.act_name = cfg.hidden_act
        # μP's MuSharedReadout: tied logits times 1/width_mult (1 outside μP).
        self.readout_multiplier = readout_multiplier(cfg)

    def __call__(self, hidden: Float[Array, "B T E"], encoder: Encoder) -> Float[Array, "B T V"]:
        h = self.norm(F.activation(self.act_name)(self.transform(hidden)))
        logits = encoder.embed.word.attend(h, precision=self.precision)
        if self.readout_multiplier != 1.0:
            logits = logits * jnp.asarray(self.readout_multiplier, logits.dtype)
        return logits + self.bias[...].astype(logits.dtype).reshape(1, 1, -1)


class _LM(nnx.Module):
    def __init__(self, encoder: Encoder, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.head = LMHead(encoder.config, rngs=rngs)

    def __call__(
        self,
        input_ids: Array,
        *,
        attention_mask: Array | None = None,
        token_type_ids: Integer[Array, "B T"] | None = None,
        deterministic: bool,
        key: PRNGKeyArray | None = None,
        positions: Integer[Array, "B P"] | None = None,
    ) -> Float[Array, "B T V"] | Float[Array, "B P V"]:
        """Token logits ``[B, T, V]``; inputs as `Encoder.__call__` (validated there).

        ``token_type_ids`` (segment ids, zeros when omitted) reach the encoder's segment
        embedding: UniLM's seq2seq LM marks the target with 1 (`jaxformer.tasks.seq2seq`).

        With ``positions`` ``[B, P]`` only those P positions of each row reach the head, giving
        ``[B, P, V]``. Masked-LM training scores ~15% of the tokens, and the head's ``E x V``
        readout is the largest matmul of a small model with a big vocabulary, so gathering first
        (BERT's ``max_predictions_per_seq``, Devlin et al. 2019) saves most of its cost.
        """
        out = self.encoder(input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, deterministic=deterministic, key=key)
        hidden = out.last_hidden_state
        if positions is not None:
            if positions.ndim != 2 or positions.shape[0] != hidden.shape[0]:
                raise ValueError(f"positions: expected shape [B={hidden.shape[0]}, P], "
                                 f"got {tuple(positions.shape)}")
            hidden = jnp.take_along_axis(hidden, positions[:, :, None].astype(jnp.int32), axis=1)
        return self.head(hidden, self.encoder)


class MaskedLM(_LM):
    """BERT's masked-LM model: a bidirectional encoder and a tied `LMHead`."""

    def __init__(self, encoder: Encoder, *, rngs: nnx.Rngs):
        if encoder.config.causal:
            raise ValueError("MaskedLM needs a bidirectional encoder, got EncoderConfig.causal=True")
        super().__init__(encoder, rngs=rngs)


class CausalLM(_LM):
    """A decoder-only LM: an encoder with ``causal=True`` and a tied `LMHead`; logits at t
    predict token t + 1."""

    def __init__(self, encoder: Encoder, *, rngs: nnx.Rngs):
        if not encoder.config.causal:
            raise ValueError("CausalLM needs an encoder built with EncoderConfig(causal=True), "
                             "got causal=False")
        super().__init__(encoder, rngs=rngs)
