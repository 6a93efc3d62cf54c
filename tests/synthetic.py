"""Small synthetic data sets that tests (and the subprocess scripts under tests/scripts) build."""

import numpy as np


def token_task(n: int, seed: int, length: int = 8) -> dict[str, np.ndarray]:
    """A learnable classification task: label = 1 iff token 5 occurs in the row.

    Other tokens are drawn from [6, 128) and position 0 holds 2 (a stand-in [CLS]), so a tiny
    encoder can learn it in a few dozen steps.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, 128, size=(n, length))
    labels = rng.integers(0, 2, size=n)
    pos = rng.integers(1, length, size=n)
    ids[labels == 1, pos[labels == 1]] = 5
    ids[:, 0] = 2
    return {"input_ids": ids.astype(np.int32), "attention_mask": np.ones((n, length), np.int32),
            "token_type_ids": np.zeros((n, length), np.int32), "labels": labels.astype(np.int32)}
