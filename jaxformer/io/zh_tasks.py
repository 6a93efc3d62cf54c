"""Classification splits of the Chinese data folder, for fine-tuning experiments.

Each loader takes the data folder (the layout of its README: ``thucnews_titles/``,
``fewclue/<task>/``, ``chnsenticorp/``), checks that the files it needs exist (a
:class:`MissingDataError` names every missing one), and returns ``(train, test)``
:class:`LabelledTexts` whose integer labels index one shared ``label_names`` list.

* :func:`thucnews_titles`: THUCNews headlines, 10 classes; ``dev.txt`` as train, ``test.txt``.
* :func:`fewclue_classification`: FewCLUE tnews (15 classes) or iflytek (119);
  ``train_few_all`` as train, the labelled ``test_public`` as test.
* :func:`chnsenticorp_split`: ChnSentiCorp hotel reviews, a fixed seeded 80/20 split (the
  corpus builder keeps its test part out of the pretraining corpus).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .zh_datasets import read_clue_classification, read_label_csv, read_names, read_thucnews


class MissingDataError(FileNotFoundError):
    """The data folder lacks files a loader needs; ``missing`` lists them (relative paths)."""

    def __init__(self, data_dir: Path, missing: Sequence[str]):
        self.data_dir, self.missing = data_dir, list(missing)
        super().__init__(f"data_dir {str(data_dir)!r} lacks {len(self.missing)} expected "
                         f"file(s): {', '.join(self.missing)} (see the data folder's README for "
                         "where each comes from)")


def require_files(data_dir: str | Path, relpaths: Sequence[str]) -> Path:
    """`data_dir` as a Path once every one of `relpaths` is a file in it; otherwise
    :class:`MissingDataError` naming all the missing ones."""
    root = Path(data_dir)
    missing = [rel for rel in relpaths if not (root / rel).is_file()]
    if missing:
        raise MissingDataError(root, missing)
    return root


class LabelledTexts(NamedTuple):
    """Texts with integer labels that index `label_names`."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]


THUCNEWS_FILES = ("thucnews_titles/dev.txt", "thucnews_titles/test.txt",
                  "thucnews_titles/class.txt")


def thucnews_titles(data_dir: str | Path) -> tuple[LabelledTexts, LabelledTexts]:
    """``(train, test)`` THUCNews headlines: the 10,000 ``dev.txt`` titles train, the 10,000
    ``test.txt`` titles test; label names from ``class.txt``."""
    root = require_files(data_dir, THUCNEWS_FILES)
    names = read_names(root / THUCNEWS_FILES[2])
    splits = []
    for rel in THUCNEWS_FILES[:2]:
        titles, labels = read_thucnews(root / rel)
        bad = [label for label in labels if not 0 <= label < len(names)]
        if bad:
            raise ValueError(f"{root / rel}: expected labels in [0, {len(names)}) (class.txt), "
                             f"found {sorted(set(bad))}")
        splits.append(LabelledTexts(titles, labels, names))
    return splits[0], splits[1]


# The field naming each label's description differs per task.
FEWCLUE_CLASSIFICATION = {"tnews": "label_desc", "iflytek": "label_des"}


def fewclue_classification(data_dir: str | Path, task: str,
                           splits: Sequence[str] = ("train_few_all", "test_public")
                           ) -> tuple[LabelledTexts, ...]:
    """The FewCLUE `task` ("tnews" or "iflytek") `splits`, one `LabelledTexts` each, by default
    ``(train, test)``: ``train_few_all.json`` and the labelled ``test_public.json`` (also
    ``dev_few_all``, ``train_0`` .. and ``dev_0`` .., when the folder has them).

    The label ids (tnews 100-116 with gaps, iflytek 0-118) are mapped to 0..K-1 in the sorted
    order of the union of the splits' ids, so the splits share one mapping whichever ids a
    split happens to lack; names are each id's description field.
    """
    if task not in FEWCLUE_CLASSIFICATION:
        raise ValueError(f"task must be one of {sorted(FEWCLUE_CLASSIFICATION)}, got {task!r}")
    if isinstance(splits, str) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of split names, got {splits!r}")
    rels = [f"fewclue/{task}/{split}.json" for split in splits]
    root = require_files(data_dir, rels)
    read = [read_clue_classification(root / rel, name_field=FEWCLUE_CLASSIFICATION[task])
            for rel in rels]
    names_of: dict = {}
    for rel, (_, labels, names) in zip(rels, read, strict=True):
        for label, name in zip(labels, names, strict=True):
            if names_of.setdefault(label, name) != name:
                raise ValueError(f"{root / rel}: expected label {label!r} to be named "
                                 f"{names_of[label]!r} throughout, found {name!r}")
    # Ids are ints in these files; string ids (other CLUE versions) sort as strings.
    ids = sorted(names_of, key=str) if any(isinstance(x, str) for x in names_of) else sorted(names_of)
    index = {label: i for i, label in enumerate(ids)}
    names = [str(names_of[label]) for label in ids]
    return tuple(LabelledTexts(texts, [index[label] for label in labels], names)
                 for texts, labels, _ in read)


CHNSENTICORP = "chnsenticorp/ChnSentiCorp_htl_all.csv"
SENTIMENT_NAMES = ["negative", "positive"]


def chnsenticorp_indices(n: int, *, seed: int = 0, test_fraction: float = 0.2
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, test rows)`` of an `n`-row file, each sorted: the first
    ``round(n * test_fraction)`` entries of ``np.random.default_rng(seed).permutation(n)``
    are the test rows, the rest train."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def chnsenticorp_split(data_dir: str | Path, *, seed: int = 0, test_fraction: float = 0.2
                       ) -> tuple[LabelledTexts, LabelledTexts]:
    """``(train, test)`` ChnSentiCorp hotel reviews (7,766 rows; 1 = positive): a fixed split by
    :func:`chnsenticorp_indices` (seed 0, 20% test: 6,213 / 1,553 rows), each part in file
    order. The same split keeps the test part out of the pretraining corpus (``zh_corpus``)."""
    root = require_files(data_dir, [CHNSENTICORP])
    texts, labels = read_label_csv(root / CHNSENTICORP)
    train_rows, test_rows = chnsenticorp_indices(len(texts), seed=seed,
                                                 test_fraction=test_fraction)
    return tuple(LabelledTexts([texts[i] for i in rows], [labels[i] for i in rows],
                               list(SENTIMENT_NAMES))
                 for rows in (train_rows, test_rows))
