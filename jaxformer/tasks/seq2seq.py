"""UniLM sequence-to-sequence fine-tuning as a `Task`: a BERT masked-LM model learns to generate.

Shape letters: N examples, B batch, T tokens, P predicted positions, V vocabulary.

UniLM (Dong et al. 2019, arXiv:1905.03197, §2.3 "Sequence-to-Sequence LM") trains a
bidirectional encoder with its tied MLM head as a conditional LM by changing the attention mask
only (`jaxformer.unilm.unilm_mask`). A row is ``[CLS] source [SEP] target [SEP]`` with
``token_type_ids`` 0 on ``[CLS] source [SEP]`` and 1 on ``target [SEP]``; the final [SEP] is
the end-of-sequence token the decoder stops on (`jaxformer.models.unilm_decode`). Position t
predicts token t + 1 wherever t + 1 is a (real) target token, so the source's closing [SEP]
predicts the first target token and the last target token predicts the closing [SEP]. Nothing
else is scored: the source is context, as in Su's bert4keras seq2seq examples
(https://kexue.fm/archives/6933, whose loss multiplies by ``segment_ids[:, 1:]``).

UniLM's own recipe also masks target tokens with [MASK] and predicts them (§2.3); like Su's
examples this task uses the plain shifted objective, which is what the decoder runs.

**Label smoothing** (Szegedy et al. 2016, arXiv:1512.00567, §7): with ``ε =
label_smoothing`` the target distribution is ``(1 - ε) one_hot + ε / V``, so the loss per token
is ``(1 - ε) (-log p_y) + ε mean_v(-log p_v)`` (optax's ``smooth_labels`` convention: the
uniform part includes the true class).

Only the ``P = max_target`` positions from the source's closing [SEP] on reach the head, as
`MaskedLMTask` gathers its masked positions: the ``E x V`` readout of a 21k vocabulary is the
largest matmul, and sources are long next to their targets.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.unilm_decode import DecodeConfig, decode
from jaxformer.tasks.base import TaskBase
from jaxformer.train.loop import evaluate_in_batches
from jaxformer.unilm import unilm_mask

SEQ2SEQ_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def decode_config(tokenizer: Any, *, max_length: int, beam_size: int = 1,
                  length_penalty: float = 1.0) -> DecodeConfig:
    """The `DecodeConfig` of UniLM's layout for `tokenizer`: stop on [SEP], pad with [PAD], never
    generate [PAD], [CLS], [UNK] or [MASK] (ids the vocabulary lacks are skipped)."""
    backend = getattr(tokenizer, "backend", None)
    mask = backend.token_to_id("[MASK]") if backend is not None else None
    suppress = {tokenizer.pad_id, tokenizer.cls_id, tokenizer.unk_id, mask} - {None,
                                                                               tokenizer.sep_id}
    return DecodeConfig(max_length=max_length, eos_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
                        beam_size=beam_size, length_penalty=length_penalty,
                        suppress_ids=tuple(sorted(suppress)))


def generate_texts(model: MaskedLM, tokenizer: Any, sources: Sequence[str], *,
                   config: DecodeConfig, max_source: int, batch_size: int = 32) -> list[str]:
    """The best hypothesis for each source, as text (`jaxformer.models.unilm_decode.decode`).

    Every batch is ``batch_size`` rows of ``[CLS] source [SEP]`` padded to ``max_source``
    tokens (the last batch filled with copies of its first row), so one compiled search serves
    all batches. The closing [SEP] and the padding are dropped; the text is
    ``tokenizer.decode`` of the rest (WordPiece joins Chinese characters with spaces).
    """
    sources = list(sources)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    texts: list[str] = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start:start + batch_size]
        rows = chunk + [chunk[0]] * (batch_size - len(chunk))
        enc = tokenizer.encode_batch(rows, max_length=max_source, padding="max_length")
        out = decode(model, enc["input_ids"], enc["attention_mask"], config=config)
        tokens, lengths = np.asarray(out.tokens[:, 0]), np.asarray(out.lengths[:, 0])
        finished = np.asarray(out.finished[:, 0])
        for r in range(len(chunk)):
            n = int(lengths[r]) - int(finished[r])  # without the closing [SEP]
            texts.append(tokenizer.decode(tokens[r, :n]))
    return texts


def encode_pairs(tokenizer: Any, sources: Sequence[str], targets: Sequence[str], *,
                 max_source: int, max_target: int, padding: str = "max_length"
                 ) -> dict[str, np.ndarray]:
    """Encode ``[CLS] source [SEP] target [SEP]`` rows for UniLM (module doc).

    Args:
      tokenizer: a `jaxformer.io` tokenizer (`WordPieceTokenizer`, `JiebaWordPieceTokenizer`:
        anything with ``encode_batch(texts, max_length=, padding=)``).
      sources, targets: N texts each.
      max_source: tokens of the source segment ``[CLS] source [SEP]`` at most (>= 2); longer
        sources are cut at the end, and the [SEP] is kept.
      max_target: tokens of the target segment ``target [SEP]`` at most (>= 1), cut likewise.
      padding: ``"max_length"`` pads every row to ``T = max_source + max_target`` (one compiled
        shape for every batch); ``"longest"`` to the longest row.

    Returns:
      int32 ``input_ids``, ``token_type_ids`` (0 source, 1 target) and ``attention_mask``
      (1 real, 0 padding), each ``[N, T]``; padding is ``tokenizer.pad_id`` with segment 0.
    """
    sources, targets = list(sources), list(targets)
    if len(sources) != len(targets):
        raise ValueError(f"targets: expected {len(sources)} texts (one per source), got "
                         f"{len(targets)}")
    for name, value, low in (("max_source", max_source, 2), ("max_target", max_target, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if padding not in ("max_length", "longest"):
        raise ValueError(f"padding: expected 'max_length' or 'longest', got {padding!r}")
    src = tokenizer.encode_batch(sources, max_length=max_source, padding="longest")
    # `[CLS] target [SEP]` with room for the [CLS] that is then dropped.
    tgt = tokenizer.encode_batch(targets, max_length=max_target + 1, padding="longest")
    n = len(sources)
    src_len = src["attention_mask"].sum(axis=1) if n else np.zeros(0, np.int64)
    tgt_len = tgt["attention_mask"].sum(axis=1) - 1 if n else np.zeros(0, np.int64)
    width = (max_source + max_target if padding == "max_length"
             else int((src_len + tgt_len).max(initial=0)))
    ids = np.full((n, width), tokenizer.pad_id, np.int32)
    types = np.zeros((n, width), np.int32)
    real = np.zeros((n, width), np.int32)
    for i in range(n):
        s, t = int(src_len[i]), int(tgt_len[i])
        ids[i, :s] = src["input_ids"][i, :s]
        ids[i, s:s + t] = tgt["input_ids"][i, 1:1 + t]
        types[i, s:s + t] = 1
        real[i, :s + t] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": real}


def target_positions(token_type_ids: Integer[Array, "B T"], attention_mask: Integer[Array, "B T"],
                     *, num_positions: int
                     ) -> tuple[Integer[Array, "B P"], Float[Array, "B P"]]:
    """The P positions that predict a target token, and their 0/1 weights.

    Position ``p`` predicts token ``p + 1``; the first predictor of a row is the last source
    token (its closing [SEP]), at ``first_target - 1``. Positions run from there for
    ``P = num_positions`` steps (clipped to ``T - 2``); a weight is 1 where token ``p + 1`` is a
    real target token.
    """
    b, t = token_type_ids.shape
    is_target = (token_type_ids != 0) & (attention_mask != 0)  # [B, T]
    # argmax of a row without target is 0: every weight below is 0 for it anyway.
    first = jnp.argmax(is_target, axis=1).astype(jnp.int32)  # [B]
    positions = jnp.clip(first[:, None] - 1 + jnp.arange(num_positions, dtype=jnp.int32)[None],
                         0, t - 2)
    nxt = jnp.take_along_axis(is_target, positions + 1, axis=1)
    # A clipped position repeats the last one: score it once.
    fresh = (first[:, None] - 1 + jnp.arange(num_positions)[None]) <= t - 2
    return positions, (nxt & fresh).astype(jnp.float32)


def smoothed_cross_entropy(logits: Float[Array, "B P V"], labels: Integer[Array, "B P"],
                           weights: Float[Array, "B P"], *, label_smoothing: float = 0.0
                           ) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Weighted mean of ``(1 - ε)(-log p_y) + ε mean_v(-log p_v)`` (fp32) and the weighted token
    accuracy of the argmax; both 0 when every weight is 0."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    w = weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(w), 1e-9)
    return jnp.sum(w * nll) / total, jnp.sum(w * correct) / total


@dataclasses.dataclass(frozen=True)
class Seq2SeqLMTask(TaskBase):
    """UniLM seq2seq fine-tuning of a `MaskedLM` (module doc).

    Data: a dict of int arrays ``input_ids``, ``token_type_ids``, ``attention_mask`` ``[N, T]``
    (`encode_pairs`).

    Attributes:
      encoder_config: the encoder `build_model` draws (a bidirectional one with
        ``type_vocab_size >= 2``); to fine-tune a checkpoint, pass
        `jaxformer.models.pretrained_lm.load_masked_lm(dir)` to `fit` instead.
      max_target: P, the positions scored per row (>= the longest ``target [SEP]``); None
        scores all ``T - 1`` positions from the source's [SEP] on.
      label_smoothing: ε in [0, 1).
    """

    encoder_config: EncoderConfig
    max_target: int | None = None
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        cfg = self.encoder_config
        if not isinstance(cfg, EncoderConfig):
            raise TypeError(f"encoder_config: expected an EncoderConfig, got "
                            f"{type(cfg).__name__}")
        if cfg.causal:
            raise ValueError("encoder_config: expected a bidirectional encoder (causal=False): "
                             "the UniLM mask supplies the causality, got causal=True")
        if cfg.type_vocab_size < 2:
            raise ValueError(f"encoder_config.type_vocab_size: expected >= 2 (segment 1 marks "
                             f"the target), got {cfg.type_vocab_size}")
        if self.max_target is not None and (isinstance(self.max_target, bool) or not isinstance(
                self.max_target, int) or self.max_target < 1):
            raise ValueError(f"max_target: expected None or an int >= 1, got {self.max_target!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a float in [0, 1), got "
                             f"{self.label_smoothing!r}")

    def build_model(self, *, rngs: nnx.Rngs) -> MaskedLM:
        return MaskedLM(Encoder(self.encoder_config, rngs=rngs), rngs=rngs)

    def collate(self, data: Mapping[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
        missing = [k for k in SEQ2SEQ_KEYS if k not in data]
        if missing:
            raise ValueError(f"data: expected keys {list(SEQ2SEQ_KEYS)}, missing {missing}")
        return super().collate({k: data[k] for k in SEQ2SEQ_KEYS}, rows)

    def targets(self, batch: Mapping[str, Array]
                ) -> tuple[Integer[Array, "B P"], Integer[Array, "B P"], Float[Array, "B P"]]:
        """``(positions, labels, weights)`` ``[B, P]`` of the scored predictions, the padding
        rows' (``batch["weights"]`` 0) weights zeroed."""
        ids = batch["input_ids"]
        t = ids.shape[1]
        if t < 2:
            raise ValueError(f"input_ids: expected T >= 2 tokens (a source and a target), got {t}")
        p = t - 1 if self.max_target is None else min(self.max_target, t - 1)
        positions, weights = target_positions(batch["token_type_ids"], batch["attention_mask"],
                                              num_positions=p)
        labels = jnp.take_along_axis(ids, positions + 1, axis=1)
        if "weights" in batch:
            weights = weights * batch["weights"].astype(jnp.float32)[:, None]
        return positions, labels, weights

    def loss_fn(self, model: Any, batch: Mapping[str, Array], *, key: PRNGKeyArray | None,
                deterministic: bool) -> tuple[Array, Mapping[str, Array]]:
        positions, labels, weights = self.targets(batch)
        mask = unilm_mask(batch["token_type_ids"], batch["attention_mask"])
        logits = model(batch["input_ids"], attention_mask=mask,
                       token_type_ids=batch["token_type_ids"], deterministic=deterministic,
                       key=key, positions=positions)
        loss, accuracy = smoothed_cross_entropy(logits, labels, weights,
                                                label_smoothing=self.label_smoothing)
        return loss, {"accuracy": accuracy, "target_tokens": jnp.sum(weights)}

    def evaluate(self, eval_step: Callable[..., Mapping[str, Array]], state: Any,
                 data: Mapping[str, np.ndarray], *, batch_size: int, seed: int
                 ) -> dict[str, float]:
        """Held-out loss and token accuracy, each batch weighted by its target tokens (the mean
        over every target token of `data`); padding rows carry ``weights`` 0."""
        return evaluate_in_batches(eval_step, state, num_examples=self.num_examples(data),
                                   batch_of_rows=lambda rows: self.collate(data, rows),
                                   batch_size=batch_size, seed=seed, weight_by="target_tokens")
