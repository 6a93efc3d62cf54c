"""Generation metrics on character-split strings: Rouge-1, Rouge-2, Rouge-L (F) and smoothed BLEU.

Su scores seq2seq generation on text split into characters, so that a character model (BERT)
and a word model (WoBERT) are compared on the same units (https://kexue.fm/archives/7758; the
scoring loop of ``test/csl.py`` in https://github.com/ZhuiyiTechnology/WoBERT):

    title = ' '.join(title).lower()                   # and the same for the prediction
    if pred_title.strip():                            # an empty prediction scores 0
        scores = Rouge().get_scores(hyps=pred_title, refs=title)      # `rouge` on PyPI
        rouge_1 += scores[0]['rouge-1']['f']          # likewise rouge-2, rouge-l
        bleu += sentence_bleu(references=[title.split(' ')], hypothesis=pred_title.split(' '),
                              smoothing_function=SmoothingFunction().method1)        # nltk
    ... then every sum divided by the number of examples, empty predictions included.

This module computes the same numbers without either package. The post dates from September
2020, when ``pip install rouge`` gave rouge 1.0.0 (March 2020); the tests compare against it
and against nltk. Definitions, including where those packages differ from the textbook metrics
(Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"; Papineni et al. 2002,
"BLEU"):

* **Tokens.** The `rouge` package first cuts a string into "sentences" at every ASCII ``.``
  (dropping the dots and the empty pieces), collapses whitespace, then splits on spaces; BLEU
  splits on single spaces only (``str.split(' ')``). Each metric here tokenises as its package
  does, so a ``.`` is a token for BLEU and a sentence break for Rouge.
* **Rouge-N** is Lin's: with clipped matches ``M = sum_g min(count_hyp(g), count_ref(g))`` over
  the n-grams g (the sentences flattened first, so n-grams run across a ``.``), ``P = M /
  #hyp n-grams`` and ``R = M / #ref n-grams`` (0 when there are none). rouge 1.0.1 (July 2021)
  changed the default to ``exclusive=True``, which counts *distinct* n-grams instead and so
  scores repeated characters such as 的 differently; ``Rouge(exclusive=False)`` restores 1.0.0.
* **Rouge-L is the package's summary-level union LCS over distinct tokens** (1.0.0 forces
  ``exclusive=True`` here whatever the option): for each reference sentence and each
  hypothesis sentence one LCS is recovered by backtracking the DP table from its end (take a
  match; else step back in the reference when that cell is strictly larger, else in the
  hypothesis); the *set* of tokens of all those LCSs has size L, and ``P = L / #distinct
  hypothesis tokens``, ``R = L / #distinct reference tokens``. For one sentence without repeated
  tokens this is Lin's sentence-level LCS F; with repeats it differs, and which LCS the
  backtracking picks then matters, so it is reproduced step for step.
* **F = 2PR / (P + R + 1e-8)**, the package's formula (the 1e-8 keeps P = R = 0 finite).
* **BLEU** is nltk's ``sentence_bleu`` with weights (1/4, 1/4, 1/4, 1/4) and Chen & Cherry's
  (2014) smoothing method 1: clipped n-gram precisions ``p_n = matches_n / max(1, total_n)``, a
  ``p_n`` with no match becomes ``0.1 / max(1, total_n)``; BLEU is 0 when no unigram matches;
  ``BLEU = BP · exp(Σ_n log(p_n) / 4)`` with ``BP = 1`` if the hypothesis is longer than the
  reference, else ``exp(1 - r / c)``.
* **Empty predictions** (nothing but whitespace) score 0 on every metric, as in Su's loop; a
  prediction left with no Rouge sentence (after `char_split`: a lone ``.``), for which the
  `rouge` package raises, scores 0 Rouge. An empty reference is an error (the package raises
  too).

`char_split` drops whitespace characters, where Su's ``' '.join(text)`` keeps a space as a
token of its own, which ``split(' ')`` then turns into two empty-string tokens for BLEU; for
text without whitespace the two agree exactly.
"""

import math
from collections import Counter
from collections.abc import Sequence

# The F-score's guard in the `rouge` package: 2PR / (P + R + 1e-8).
F_EPSILON = 1e-8
# nltk's SmoothingFunction(epsilon=0.1).method1: the count given to an n-gram order with no match.
BLEU_EPSILON = 0.1
BLEU_ORDER = 4

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu")


def char_split(text: str, *, lower: bool = True) -> str:
    """``text`` as its characters separated by single spaces, whitespace dropped, lowercased
    (Su lowercases both sides, so Latin letters in Chinese titles match case-insensitively)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    joined = " ".join(ch for ch in text if not ch.isspace())
    # Lowercase after joining, as Su does: a character whose lowercase is two code points
    # (e.g. 'İ') stays one token.
    return joined.lower() if lower else joined


def _rouge_sentences(text: str) -> list[list[str]]:
    """The `rouge` package's tokens: sentences cut at '.', whitespace collapsed, split on ' '."""
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if piece]


def _check_pair(hypothesis: str, reference: str) -> None:
    for name, value in (("hypothesis", hypothesis), ("reference", reference)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str of space-separated tokens (e.g. char_split's "
                            f"output), got {type(value).__name__}")
    if not reference.strip():
        raise ValueError(f"reference must contain at least one token, got {reference!r}")


def _rouge_inputs(hypothesis: str, reference: str
                  ) -> tuple[list[list[str]], list[list[str]]] | None:
    """Both sides as Rouge sentences, or None when the hypothesis has no token (score 0)."""
    _check_pair(hypothesis, reference)
    ref = _rouge_sentences(reference)
    if not ref:
        raise ValueError(f"reference has no Rouge sentence (the `rouge` package cuts sentences at "
                         f"'.'), got {reference!r}")
    hyp = _rouge_sentences(hypothesis) if hypothesis.strip() else []
    return (hyp, ref) if hyp else None


def _f_score(precision: float, recall: float) -> float:
    return 2.0 * ((precision * recall) / (precision + recall + F_EPSILON))


def _ngram_counts(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[k:k + n]) for k in range(len(tokens) - n + 1))


def _clipped_matches(hyp: Counter[tuple[str, ...]], ref: Counter[tuple[str, ...]]) -> int:
    """``sum_g min(hyp[g], ref[g])``: each reference occurrence matches at most one hypothesis
    occurrence (BLEU's clipping; Lin's Rouge-N)."""
    return sum(min(count, ref[gram]) for gram, count in hyp.items())


def rouge_n(hypothesis: str, reference: str, n: int) -> float:
    """Rouge-N F with clipped n-gram counts (module doc), in [0, 1].

    Args:
      hypothesis: the prediction, tokens separated by spaces (`char_split`).
      reference: the target, likewise; must hold a token.
      n: the n-gram order, >= 1 (Rouge-1, Rouge-2).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    sentences = _rouge_inputs(hypothesis, reference)
    if sentences is None:
        return 0.0
    # The package flattens the sentences first, so n-grams run across a '.'.
    hyp, ref = ([tok for sentence in side for tok in sentence] for side in sentences)
    hyp_counts, ref_counts = _ngram_counts(hyp, n), _ngram_counts(ref, n)
    overlap = _clipped_matches(hyp_counts, ref_counts)
    hyp_total, ref_total = hyp_counts.total(), ref_counts.total()
    precision = overlap / hyp_total if hyp_total else 0.0
    recall = overlap / ref_total if ref_total else 0.0
    return _f_score(precision, recall)


def _lcs_tokens(ref: list[str], hyp: list[str]) -> set[str]:
    """The distinct tokens of the LCS of ``ref`` and ``hyp`` that the `rouge` package's
    backtracking recovers (module doc); iterative, so long texts cannot exhaust the stack."""
    rows, cols = len(ref), len(hyp)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        above, row = table[i - 1], table[i]
        for j in range(1, cols + 1):
            if ref[i - 1] == hyp[j - 1]:
                row[j] = above[j - 1] + 1
            else:
                row[j] = max(above[j], row[j - 1])
    found, i, j = set(), rows, cols
    while i > 0 and j > 0:
        if ref[i - 1] == hyp[j - 1]:
            found.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return found


def rouge_l(hypothesis: str, reference: str) -> float:
    """Rouge-L F: the `rouge` package's union LCS over distinct tokens (module doc), in [0, 1].

    Args:
      hypothesis: the prediction, tokens separated by spaces (`char_split`).
      reference: the target, likewise; must hold a token.
    """
    sentences = _rouge_inputs(hypothesis, reference)
    if sentences is None:
        return 0.0
    hyp, ref = sentences
    union: set[str] = set()
    for ref_sentence in ref:
        for hyp_sentence in hyp:
            union |= _lcs_tokens(ref_sentence, hyp_sentence)
    distinct_hyp = {tok for sentence in hyp for tok in sentence}
    distinct_ref = {tok for sentence in ref for tok in sentence}
    return _f_score(len(union) / len(distinct_hyp), len(union) / len(distinct_ref))


def bleu(hypothesis: str, reference: str) -> float:
    """Sentence BLEU-4 with smoothing method 1 against one reference (module doc), in [0, 1].

    Args:
      hypothesis: the prediction, tokens separated by single spaces (`char_split`).
      reference: the target, likewise; must hold a token.
    """
    _check_pair(hypothesis, reference)
    if not hypothesis.strip():
        return 0.0
    hyp, ref = hypothesis.split(" "), reference.split(" ")
    log_precisions = []
    for n in range(1, BLEU_ORDER + 1):
        hyp_counts, ref_counts = _ngram_counts(hyp, n), _ngram_counts(ref, n)
        matches = _clipped_matches(hyp_counts, ref_counts)
        total = max(1, hyp_counts.total())
        if n == 1 and matches == 0:
            return 0.0
        log_precisions.append(math.log((matches if matches else BLEU_EPSILON) / total))
    c, r = len(hyp), len(ref)
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(math.fsum(lp / BLEU_ORDER for lp in log_precisions))


def _check_texts(name: str, texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of str (one text per example), got "
                        f"{type(texts).__name__}")
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{k}] must be a str, got {type(text).__name__}")


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus means of Rouge-1, Rouge-2, Rouge-L (F) and BLEU on character-split text, in percent.

    Each text is split by `char_split` (whitespace dropped, lowercased), then scored with
    `rouge_n`, `rouge_l` and `bleu`; the mean runs over every example, an empty prediction
    counting 0 (Su's evaluation loop).

    Args:
      predictions: N generated texts, raw (not yet split).
      references: N target texts, raw; none may be empty.

    Returns:
      ``{"rouge-1", "rouge-2", "rouge-l", "bleu"}``, each a mean in [0, 100].
    """
    _check_texts("predictions", predictions)
    _check_texts("references", references)
    if len(predictions) != len(references):
        raise ValueError(f"predictions and references must have the same length, got "
                         f"{len(predictions)} predictions and {len(references)} references")
    if not references:
        raise ValueError("predictions and references must hold at least one example, got 0")
    sums = dict.fromkeys(METRICS, 0.0)
    for k, (prediction, target) in enumerate(zip(predictions, references, strict=True)):
        hyp, ref = char_split(prediction), char_split(target)
        if not ref:
            raise ValueError(f"references[{k}] must contain a non-whitespace character, got "
                             f"{target!r}")
        if not _rouge_sentences(ref):
            raise ValueError(f"references[{k}] has no Rouge sentence (the `rouge` package cuts "
                             f"sentences at '.'), got {target!r}")
        sums["rouge-1"] += rouge_n(hyp, ref, 1)
        sums["rouge-2"] += rouge_n(hyp, ref, 2)
        sums["rouge-l"] += rouge_l(hyp, ref)
        sums["bleu"] += bleu(hyp, ref)
    return {name: 100.0 * total / len(references) for name, total in sums.items()}
