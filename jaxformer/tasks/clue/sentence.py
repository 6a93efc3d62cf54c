"""The sentence-level CLUE tasks (IFLYTEK, TNEWS, AFQMC, CMNLI, OCNLI, WSC, CSL) for `run_clue`.

All seven are one classifier over their layout (`jaxformer.tasks.clue.layouts`): Dense on the
encoder's first token, cross-entropy, accuracy; post 8739 trains each with AdaFactor and keeps
the best dev accuracy. The head is `SequenceClassifier` (through the BERT pooler when the
checkpoint has one; Su's code reads ``h[:, 0]`` of the last layer directly).

Shape letters: N examples, T tokens, C classes.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxformer.io.clue import CLUE_LABELS
from jaxformer.models.encoder import Encoder
from jaxformer.models.heads import SequenceClassifier
from jaxformer.tasks.classification import ClassificationTask
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.layouts import encode_sentences
from jaxformer.tasks.clue.metrics import accuracy
from jaxformer.tasks.theseus_recipe import new_classifier


@dataclasses.dataclass(frozen=True)
class SentenceAdapter:
    """What `run_clue` needs of a sentence-level task: encode, build, train, predict, score."""

    config: ClueConfig
    tokenizer: Any

    best_metric = "accuracy"

    @property
    def num_labels(self) -> int:
        return len(CLUE_LABELS[self.config.task])

    def encode(self, records: Sequence[Any]) -> dict[str, np.ndarray]:
        """``{input_ids, attention_mask, token_type_ids: [N, T], labels: [N]}`` (-1 unlabelled)."""
        return encode_sentences(records, self.tokenizer, max_len=self.config.max_len,
                                segment_ids=self.config.segment_ids)

    def task(self) -> ClassificationTask:
        return ClassificationTask(encoder_config=None, num_labels=self.num_labels)

    def build(self, pretrained: Encoder) -> SequenceClassifier:
        """A classifier over a copy of `pretrained`, its head drawn from the config's seed."""
        return new_classifier(pretrained, self.num_labels, seed=self.config.seed)

    def predict(self, model: nnx.Module, data: dict[str, np.ndarray], records: Sequence[Any],
                *, batch_size: int = 64) -> list[int]:
        """The argmax class index of each row, in record order."""
        del records
        graphdef, state = nnx.split(model)

        @jax.jit
        def forward(state: Any, ids: jax.Array, mask: jax.Array, types: jax.Array) -> jax.Array:
            logits = nnx.merge(graphdef, state)(ids, attention_mask=mask, token_type_ids=types,
                                                deterministic=True)
            return jnp.argmax(logits, axis=-1)

        n, out = len(data["input_ids"]), []
        for start in range(0, n, batch_size):
            rows = np.arange(start, start + batch_size) % n  # one compiled shape
            pred = forward(state, data["input_ids"][rows], data["attention_mask"][rows],
                           data["token_type_ids"][rows])
            out.extend(int(p) for p in np.asarray(pred)[:min(batch_size, n - start)])
        return out

    def score(self, predictions: Sequence[int], records: Sequence[Any]) -> dict[str, float]:
        """``{"accuracy": %}`` against the records' labels."""
        return {"accuracy": accuracy(list(predictions), [r.label for r in records])}

    def submission(self, predictions: Sequence[int], records: Sequence[Any]) -> dict[Any, Any]:
        """``{id: label string}`` for the CLUE submission writer."""
        labels = CLUE_LABELS[self.config.task]
        return {r.id: labels[p] for r, p in zip(records, predictions, strict=True)}
