"""CHID idiom cloze: choose one candidate idiom per blank from a ``[B, C]`` score matrix.

A CHID passage has B blanks that share one list of C candidate idioms (C = 10, B <= C), and
each idiom fills at most one blank. Su's CLUE baseline (https://kexue.fm/archives/8739, code
https://github.com/bojone/CLUE-bert4keras/blob/master/src/chid.py) scores every
(blank, candidate) pair and decodes a passage's blanks jointly with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``), which the post reports as about 6 points of
accuracy over picking each blank's best candidate on its own. Both decodings are here; score
either with `jaxformer.tasks.clue.metrics.accuracy`.

Shape letters: B blanks of one passage, C candidates.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment


def _scores(scores: npt.ArrayLike, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"{name}: expected a [blanks, candidates] matrix, got shape {s.shape}")
    bad = int(np.size(s) - np.count_nonzero(np.isfinite(s)))
    if bad:
        raise ValueError(f"{name}: expected finite scores, got {bad} NaN or infinite entries")
    return s


def independent_argmax(scores: npt.ArrayLike) -> list[int]:
    """Each blank's best candidate on its own (``argmax`` over C; ties go to the lower index);
    two blanks may get the same idiom.

    Args:
      scores: [B, C], higher is better.
    """
    return [int(j) for j in np.argmax(_scores(scores, "scores"), axis=1)]


def hungarian_assign(scores: npt.ArrayLike) -> list[int]:
    """The candidate of each blank that maximises the passage's total score with every
    candidate used at most once (a maximum-weight assignment).

    Args:
      scores: [B, C] with B <= C, higher is better (logits or log-probabilities).

    Returns:
      B distinct candidate indices, in blank order.
    """
    s = _scores(scores, "scores")
    blanks, candidates = s.shape
    if blanks > candidates:
        raise ValueError(f"scores: expected blanks <= candidates, got shape {s.shape} "
                         f"({blanks} blanks, {candidates} candidates); each blank needs its own "
                         "candidate")
    # With B <= C every row is assigned, and scipy returns the rows sorted (0..B-1), so the
    # column indices are already in blank order.
    _, cols = linear_sum_assignment(s, maximize=True)
    return [int(j) for j in cols]


def decode_chid(groups: Sequence[npt.ArrayLike]) -> dict[str, list[list[int]]]:
    """Both decodings of every passage.

    Args:
      groups: one [B_i, C] score matrix per passage (Su groups by the data set's line, whose
        blanks share its candidate list).

    Returns:
      ``{"hungarian": [...], "argmax": [...]}``, each one list of candidate indices per
      passage, in the order of `groups`.
    """
    out: dict[str, list[list[int]]] = {"hungarian": [], "argmax": []}
    for i, group in enumerate(groups):
        s = _scores(group, f"groups[{i}]")
        if s.shape[0] > s.shape[1]:
            raise ValueError(f"groups[{i}]: expected blanks <= candidates, got shape {s.shape}")
        out["hungarian"].append(hungarian_assign(s))
        out["argmax"].append(independent_argmax(s))
    return out
