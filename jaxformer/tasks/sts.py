"""Unsupervised STS evaluation: embed each distinct sentence once (all poolings from one encoder
pass), optionally whiten, score pairs by cosine, report Spearman's rho (post 8321, post 8348).

`encode_pairs` returns, per pooling, the ``[N, E]`` embeddings of both sides of N pairs;
`sts_eval` whitens and scores them. Whitening statistics are fitted, as in Su's
``BERT-whitening/chn/eval.py``, on the evaluated pairs' own sentences unless other sentences
are given (`fit_vectors`).

Shape letters: N pairs, S distinct sentences, E width, K whitened width.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxformer.contrastive import alignment, uniformity
from jaxformer.io.sts_pairs import SentencePairs
from jaxformer.models.sentence import embed_poolings
from jaxformer.similarity import pair_spearman
from jaxformer.whitening import Whitening, fit_whitening, stats_of, whiten


@dataclasses.dataclass(frozen=True)
class PairVectors:
    """Both sides of N pairs under one pooling, and the distinct sentences' vectors.

    Attributes:
      u, v: [N, E] float32, rows of `sentences` indexed by the pairs.
      sentences: [S, E] float32, one row per distinct sentence (what whitening is fitted on).
    """

    u: np.ndarray
    v: np.ndarray
    sentences: np.ndarray


def encode_pairs(model: Any, tokenizer: Any, pairs: SentencePairs, *,
                 poolings: Sequence[str], max_length: int | None = None, batch_size: int = 64,
                 progress: bool = False, dtype: str | None = None) -> dict[str, PairVectors]:
    """``{pooling: PairVectors}``; each distinct sentence goes through the encoder once, and
    all `poolings` come from that one pass (`embed_poolings`)."""
    sentences = pairs.sentences()
    index = {s: i for i, s in enumerate(sentences)}
    left = np.fromiter((index[s] for s in pairs.s1), np.int64, len(pairs))
    right = np.fromiter((index[s] for s in pairs.s2), np.int64, len(pairs))
    vectors = embed_poolings(model, tokenizer, sentences, poolings=tuple(poolings),
                             max_length=max_length, batch_size=batch_size, progress=progress,
                             dtype=dtype)
    return {p: PairVectors(x[left], x[right], x) for p, x in vectors.items()}


def alignment_uniformity(u: np.ndarray, v: np.ndarray, positive: np.ndarray,
                         sentences: np.ndarray, *, max_sentences: int = 4096
                         ) -> dict[str, float]:
    """Wang & Isola's (arXiv 2005.10242) alignment over the positive pairs and uniformity over
    the distinct sentences (at most the first `max_sentences`, a fixed subset), on L2-normalised
    vectors; lower is better for both (`jaxformer.contrastive`)."""
    pos = np.asarray(positive, bool)
    align = float(alignment(jnp.asarray(u[pos]), jnp.asarray(v[pos]))) if pos.any() \
        else float("nan")
    return {"alignment": align,
            "uniformity": float(uniformity(jnp.asarray(sentences[:max_sentences])))}


def positives(pairs: SentencePairs) -> np.ndarray:
    """Which pairs count as positive for alignment: label 1 on 0/1 sets, score >= 4 on graded
    0-5 sets (Wang & Isola use STS-B pairs scored above 4)."""
    binary = np.isin(pairs.scores, (0.0, 1.0)).all()
    return pairs.scores == 1.0 if binary else pairs.scores >= 4.0


def sts_eval(vectors: PairVectors, gold: np.ndarray, *, whiten_k: int | None = None,
             whitening: Whitening | None = None, fit_vectors: np.ndarray | None = None
             ) -> tuple[float, Whitening | None]:
    """Spearman's rho of the pairs' cosines (a fraction in [-1, 1]) and the whitening used.

    Args:
      vectors: from `encode_pairs`.
      gold: [N] gold scores.
      whiten_k: whiten, keeping K dims (0 or None: no whitening, unless `whitening` is given;
        -1: all E dims, as Su's ``n_components=-1``).
      whitening: an already fitted whitening to apply (overrides `whiten_k`'s fit).
      fit_vectors: [M, E] vectors to fit the whitening on (default: `vectors.sentences`, the
        evaluated pairs' own sentences, as Su's ``chn/eval.py``).
    """
    u, v = vectors.u, vectors.v
    if whitening is None and whiten_k not in (None, 0):
        width = u.shape[1]
        k = width if whiten_k == -1 else whiten_k
        if not 1 <= k <= width:
            raise ValueError(f"whiten_k: expected -1 or an int in [1, E={width}], got {whiten_k}")
        source = vectors.sentences if fit_vectors is None else fit_vectors
        whitening = fit_whitening(stats_of(jnp.asarray(source)), k)
    if whitening is not None:
        u, v = np.asarray(whiten(u, whitening)), np.asarray(whiten(v, whitening))
    rho = float(pair_spearman(jnp.asarray(u), jnp.asarray(v), jnp.asarray(gold, jnp.float32)))
    return rho, whitening


def whitened(vectors: PairVectors, whitening: Whitening | None) -> PairVectors:
    """`vectors` mapped through `whitening` (unchanged when None)."""
    if whitening is None:
        return vectors
    return PairVectors(*(np.asarray(whiten(x, whitening))
                         for x in (vectors.u, vectors.v, vectors.sentences)))
