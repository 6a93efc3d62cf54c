"""CLUE evaluation metrics in plain Python: accuracy, CMRC2018 EM/F1, entity-level NER F1.

Aggregate scores are percentages in [0, 100]. The per-question CMRC2018 helpers
(`cmrc2018_em`, `cmrc2018_f1`) return fractions in [0, 1], as the official script does before
its final ``100 *``. Multiple-choice tasks (C3, CHID) are scored with `accuracy`.

Definitions re-implemented here (no code copied):

- CMRC2018: the official evaluation script (v6, the same rules as the v5 "SQuAD-style" one
  and CLUE's copy),
  https://github.com/ymcui/cmrc2018/blob/master/baseline/cmrc2018_evaluate.py
- Entity F1: micro counts of exact (type, start, end) matches, as the CLUENER2020 baseline's
  ``SeqEntityScore``
  (https://github.com/CLUEbenchmark/CLUENER2020/blob/master/bilstm_crf_pytorch/ner_metrics.py)
  and Su's CLUE evaluator (https://github.com/bojone/CLUE-bert4keras/blob/master/src/cluener.py).
  CLUENER2020's own ``score.py`` instead averages per-type F1 (macro) and matches entities by
  their text; the per-type numbers returned here are the parts for that.
- BIO decoding: the convention of CoNLL's ``conlleval`` (Python port:
  https://github.com/sighsmile/conlleval), where an ``I-X`` that does not continue an open X
  entity starts a new one. Its per-type table, like ours, lists the types of both sides and
  scores a zero denominator as 0.
"""

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Entity = tuple[str, int, int]  # (type, start, end); end exclusive from `bio_to_spans`


def _check_pair(a: Any, b: Any, name_a: str, name_b: str) -> None:
    for x, name in ((a, name_a), (b, name_b)):
        if getattr(x, "ndim", 1) != 1:  # NumPy or JAX arrays
            raise ValueError(f"{name}: expected a 1-D sequence, got an array of shape {x.shape}")
    if len(a) != len(b):
        raise ValueError(f"{name_a} and {name_b}: expected the same length, got {len(a)} and "
                         f"{len(b)}")
    if len(a) == 0:
        raise ValueError(f"{name_a}: expected at least one item, got 0")


def accuracy(predictions: Sequence[Any] | npt.ArrayLike, labels: Sequence[Any] | npt.ArrayLike
             ) -> float:
    """Percent of positions where ``predictions[i] == labels[i]`` (0..100).

    Used for every CLUE classification task and for the multiple-choice ones (C3, CHID), as
    CLUE's ``simple_accuracy`` (mean of equal predictions and labels).
    """
    _check_pair(predictions, labels, "predictions", "labels")
    right = sum(bool(p == y) for p, y in zip(predictions, labels, strict=True))
    return 100.0 * right / len(labels)


# ---------------------------------------------------------------------------------------------
# CMRC2018 (https://github.com/ymcui/cmrc2018/blob/master/baseline/cmrc2018_evaluate.py)

# The official ``sp_char`` list: 11 ASCII and 21 full-width characters. The script tests
# membership one character at a time, so its 22nd entry, the two-character "……", never
# matches: a lone "…" (U+2026) is NOT removed. Also kept: ASCII . , ? ! ; ' " ( ), the left
# single quote ‘ (U+2018), the em dash — (U+2014) and the katakana middle dot ・ (U+30FB).
CMRC2018_PUNCTUATION = frozenset(
    "-:_*^/\\~`+="
    "\uff0c\u3002\uff1a\uff1f\uff01\u201c\u201d\uff1b\u2019\u300a\u300b"  # ，。：？！“”；’《》
    "\u00b7\u3001\u300c\u300d\uff08\uff09\uff0d\uff5e\u300e\u300f")     # ·、「」（）－～『』


def _is_cjk(ch: str) -> bool:
    # The official pattern is [\u4e00-\u9fa5], the CJK Unified Ideographs of Unicode 1.1;
    # later ones (U+9FA6..U+9FFF, the extensions such as U+3469) fall into the non-CJK runs.
    return "\u4e00" <= ch <= "\u9fa5"


def cmrc2018_normalize(text: str) -> str:
    """The official ``remove_punctuation``: lowercase, strip outer whitespace, then drop every
    `CMRC2018_PUNCTUATION` character. Inner whitespace is kept, and the strip comes first, so
    ``"abc 。"`` becomes ``"abc "``."""
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC2018_PUNCTUATION)


# Characters that NLTK's word tokenizer always makes tokens of their own (brackets, ;@#$%&?!*,
# the figure/en/em dashes and horizontal bar U+2012..U+2015, the Unicode quotes).
_SOLO = frozenset("()[]{}<>;@#$%&?!*\u2012\u2013\u2014\u2015\u00ab\u201c\u2018\u201e"
                  "\u00bb\u201d\u2019")
# A quote after one of these opens (NLTK pads «“‘„` with spaces before it classifies quotes).
_OPENERS = frozenset(" ([{<\u00ab\u201c\u2018\u201e`")  # a space, not a tab
_CLOSERS = frozenset("])}>'\u00bb\u201d\u2019")
# Robert MacIntyre's two-part words, which NLTK splits ("cannot" -> "can", "not").
_MACINTYRE = {"cannot": ["can", "not"], "d'ye": ["d", "'ye"], "gimme": ["gim", "me"],
              "gonna": ["gon", "na"], "gotta": ["got", "ta"], "lemme": ["lem", "me"],
              "more'n": ["more", "'n"], "wanna": ["wan", "na"]}
# Characters NLTK pads with spaces before it splits a "'" followed by a space off a word.
_PADDED_EARLY = frozenset(";@#$%&?!\u2012\u2013\u2014\u2015\u00ab\u201c\u2018\u201e")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"  # Python's \w


def _opens(run: str, i: int) -> bool:
    """Whether the quote (`"` or `''`) at `i` opens: NLTK turns a `"` that starts the run into
    ``, then pads it, so a quote right after it opens too, as does one after whitespace or an
    opening bracket or quote."""
    if i == 0:
        return run[0] == '"'
    return run[i - 1] in _OPENERS or (i == 1 and run[0] == '"')


def _final_period(run: str) -> int:
    """Index of the sentence-final "." that NLTK splits off (followed only by spaces and
    closing brackets or quotes, then any whitespace; not preceded by another "."), or -1."""
    i = len(run.rstrip()) - 1
    while i >= 0 and (run[i] == " " or run[i] in _CLOSERS
                      or (run[i] == '"' and not _opens(run, i))):
        i -= 1
    return i if i > 0 and run[i] == "." and run[i - 1] != "." else -1


def _leading_apostrophe(run: str, i: int) -> bool:
    """NLTK splits a "'" that starts a word ("'shade'", "'90s") unless a clitic follows ("'s")."""
    if run[i] != "'" or (i and _is_word(run[i - 1])) or not _is_word(run[i + 1:i + 2] or " "):
        return False
    k = i + 1
    while k < len(run) and _is_word(run[k]):
        k += 1
    return run[i + 1:k] not in ("re", "ve", "ll", "m", "t", "s", "d", "n")


def _split_clitics(word: str, spaced: bool) -> list[str]:
    """NLTK's passes over a word's end: a trailing "'" when a space follows it at that point
    (`spaced`), then one of 's 'm 'd ', then one of 'll 're 've n't; each only after a
    character other than "'"."""
    passes = ((("'",),) if spaced else ()) + (("'s", "'m", "'d", "'"),
                                              ("'ll", "'re", "'ve", "n't"))
    tail: list[str] = []
    for clitics in passes:
        for clitic in clitics:
            head = word[:-len(clitic)]
            if word.endswith(clitic) and head and not head.endswith("'"):
                word, tail = head, [clitic, *tail]
                break
    return [*_MACINTYRE.get(word, [word]), *tail]


def _word_tokenize(run: str) -> list[str]:
    """The official script hands each non-CJK run to ``nltk.word_tokenize``; this is a
    dependency-free reading of NLTK's rules (``NLTKWordTokenizer`` in
    https://github.com/nltk/nltk/blob/develop/nltk/tokenize/destructive.py), so the metric
    needs neither NLTK nor its Punkt data.

    Split on whitespace; `_SOLO` characters and runs of 2+ dots are tokens; "," and ":" are
    tokens unless a digit follows ("3,000" stays whole); the run's final "." is a token
    ("u.s.a." -> "u.s.a", "."; "364.6" stays whole); a `"` or `''` is "``" when it opens
    (`_opens`) and "''" otherwise; a "'" starting a word is split off unless a clitic follows;
    clitics are split off a word's end, and "cannot", "gonna" and the like in two
    (`_split_clitics`). Not reproduced: Punkt sentence splitting inside one run, and clitics
    or MacIntyre words inside a longer word ("n'tx", "x.cannot").
    """
    tokens: list[str] = []
    word: list[str] = []

    def flush(spaced: bool) -> None:
        if word:
            tokens.extend(_split_clitics("".join(word), spaced))
            word.clear()

    final, i, consumed = _final_period(run), 0, -1
    while i < len(run):
        ch, j = run[i], i + 1
        # NLTK's `([:,])([^\d])` substitution consumes the character after a split comma, so
        # a second comma right after it splits only at the end of the run.
        comma = ch in ",:" and (j == len(run) or (i != consumed and not run[j].isdecimal()))
        if ch.isspace():
            flush(ch == " ")
        elif ch == "." and run[j:j + 1] == ".":
            while j < len(run) and run[j] == ".":
                j += 1
            flush(True)
            tokens.append(run[i:j])
        elif ch in _SOLO or i == final or comma or _leading_apostrophe(run, i):
            flush(ch in _PADDED_EARLY or i == final or comma)
            tokens.append(ch)
            consumed = j if comma else -1
        elif ch == '"' or run[i:i + 2] == "''":
            j = i + 1 if ch == '"' else i + 2
            flush(_opens(run, i))
            tokens.append("``" if _opens(run, i) else "''")
        else:
            word.append(ch)
        i = j
    flush(False)
    return tokens


def mixed_segmentation(text: str, *, remove_punctuation: bool = True) -> list[str]:
    """The official ``mixed_segmentation``: each CJK character (U+4E00..U+9FA5) is a token and
    every run of other characters between them goes through `_word_tokenize` (NLTK's rules), so
    "2018年CMRC比赛" -> ["2018", "年", "cmrc", "比", "赛"] (after lowercasing and stripping).

    With `remove_punctuation` (the official F1 uses it) `CMRC2018_PUNCTUATION` characters are
    dropped WITHOUT ending the run: "1990-2000" is one token "19902000". Without it each is a
    token of its own and ends the run, like a CJK character.
    """
    tokens: list[str] = []
    run: list[str] = []
    for ch in text.lower().strip():
        punct = ch in CMRC2018_PUNCTUATION
        if punct and remove_punctuation:
            continue
        if punct or _is_cjk(ch):
            tokens.extend(_word_tokenize("".join(run)))
            run.clear()
            tokens.append(ch)
        else:
            run.append(ch)
    tokens.extend(_word_tokenize("".join(run)))
    return tokens


def longest_common_substring(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest CONTIGUOUS run shared by `a` and `b` (the official ``find_lcs``):
    dynamic programming over ``run[i][j]`` = common run ending at ``a[i-1]``, ``b[j-1]``."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def _check_answers(references: Any, name: str) -> None:
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"{name}: expected a list of answer strings, got "
                        f"{type(references).__name__}")
    if not references:
        raise ValueError(f"{name}: expected at least one reference answer, got 0")


def cmrc2018_em(prediction: str, references: Sequence[str]) -> float:
    """1.0 when `prediction` equals any reference after `cmrc2018_normalize`, else 0.0."""
    _check_answers(references, "references")
    target = cmrc2018_normalize(prediction)
    return float(any(cmrc2018_normalize(r) == target for r in references))


def cmrc2018_f1(prediction: str, references: Sequence[str]) -> float:
    """Max over references of the segment-level F1, in [0, 1].

    Unlike SQuAD's bag-of-tokens overlap, the official script counts as "common" only the
    longest common SUBSTRING (contiguous run) of the two `mixed_segmentation` token lists:
    precision = lcs / len(prediction tokens), recall = lcs / len(reference tokens), and 0 when
    nothing is shared. So "北京大学" vs "大学北京" scores 0.5, not 1.0.
    """
    _check_answers(references, "references")
    predicted = mixed_segmentation(prediction)
    best = 0.0
    for reference in references:
        gold = mixed_segmentation(reference)
        common = longest_common_substring(gold, predicted)
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def cmrc2018_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
                    ) -> dict[str, float | int]:
    """The official CMRC2018 summary over the questions of `references`.

    Args:
      predictions: ``{question id: predicted answer text}``. Ids not in `references` are
        ignored, as the official script does.
      references: ``{question id: [reference answer texts]}``, at least one per question.

    Returns:
      ``em`` and ``f1``: percent (0..100) means over ALL questions of `references`; a question
      without a prediction is "skipped" and scores 0 in both (the official script counts it in
      the total and adds nothing). ``average``: ``(em + f1) / 2``, the official AVERAGE and the
      CMRC2018 figure of Su's CLUE table (https://kexue.fm/archives/8739). ``total``: number of
      questions; ``skipped``: how many had no prediction.
    """
    if not references:
        raise ValueError("references: expected at least one question, got 0")
    em = f1 = 0.0
    skipped = 0
    for qid, answers in references.items():
        _check_answers(answers, f"references[{qid!r}]")
        if qid not in predictions:
            skipped += 1
            continue
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise TypeError(f"predictions[{qid!r}]: expected a str, got "
                            f"{type(prediction).__name__}")
        em += cmrc2018_em(prediction, answers)
        f1 += cmrc2018_f1(prediction, answers)
    total = len(references)
    em, f1 = 100.0 * em / total, 100.0 * f1 / total
    return {"em": em, "f1": f1, "average": (em + f1) / 2, "total": total, "skipped": skipped}


# ---------------------------------------------------------------------------------------------
# Named entities


def bio_to_spans(tags: Sequence[str]) -> list[Entity]:
    """``(type, start, end_exclusive)`` spans of char-level BIO tags, in order.

    ``B-X`` always starts an X entity; ``I-X`` continues the open entity if it is an X and
    otherwise starts a new X entity (the conlleval convention, also seqeval's default mode): so
    ``O I-PER I-PER`` -> ``[("PER", 1, 3)]`` and ``B-PER I-LOC`` -> ``[("PER", 0, 1),
    ("LOC", 1, 2)]``. ``O`` closes any open entity.
    """
    spans: list[Entity] = []
    kind: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not (tag == "O" or (tag[:2] in ("B-", "I-")
                                                          and len(tag) > 2)):
            raise ValueError(f"tags[{i}]: expected 'O', 'B-<type>' or 'I-<type>', got {tag!r}")
        new = None if tag == "O" else tag[2:]
        if tag[0] == "I" and new == kind:
            continue
        if kind is not None:
            spans.append((kind, start, i))
        kind, start = new, i
    if kind is not None:
        spans.append((kind, start, len(tags)))
    return spans


def _entity_set(entities: Any, name: str) -> set[Entity]:
    if isinstance(entities, str) or not isinstance(entities, Collection):
        raise TypeError(f"{name}: expected a collection of (type, start, end) tuples, got "
                        f"{type(entities).__name__}")
    out = set()
    for e in entities:
        if not (isinstance(e, tuple) and len(e) == 3 and isinstance(e[0], str)
                and all(isinstance(x, int | np.integer) and not isinstance(x, bool)
                        for x in e[1:])):
            raise ValueError(f"{name}: expected entities as (type: str, start: int, end: int) "
                             f"tuples, got {e!r}")
        out.add((e[0], int(e[1]), int(e[2])))
    return out


def _prf(right: int, found: int, gold: int) -> dict[str, float]:
    # A zero denominator gives 0, as SeqEntityScore.compute. 2*right/(found+gold) is the
    # harmonic mean of precision and recall, and 0 when nothing is right.
    return {"f1": 200.0 * right / (found + gold) if found + gold else 0.0,
            "precision": 100.0 * right / found if found else 0.0,
            "recall": 100.0 * right / gold if gold else 0.0}


def entity_f1(predicted: Sequence[Collection[tuple[Any, ...]]],
              gold: Sequence[Collection[tuple[Any, ...]]]) -> dict[str, Any]:
    """Entity-level micro F1 of exact ``(type, start, end)`` matches, in percent.

    Args:
      predicted, gold: one collection of entity tuples per sentence (duplicates count once).
        Any span convention works as long as both sides share it.

    Returns:
      ``{"f1", "precision", "recall"}`` from the corpus-wide counts (right / predicted,
      right / gold), and ``per_type``: ``{type: {"f1", "precision", "recall", "support"}}`` for
      every type seen on either side, ``support`` being its number of gold entities. A zero
      denominator gives 0.0.
    """
    _check_pair(predicted, gold, "predicted", "gold")
    right: Counter[str] = Counter()
    found: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for i, (p, g) in enumerate(zip(predicted, gold, strict=True)):
        p, g = _entity_set(p, f"predicted[{i}]"), _entity_set(g, f"gold[{i}]")
        found.update(e[0] for e in p)
        expected.update(e[0] for e in g)
        right.update(e[0] for e in p & g)
    out: dict[str, Any] = _prf(sum(right.values()), sum(found.values()),
                               sum(expected.values()))
    out["per_type"] = {t: {**_prf(right[t], found[t], expected[t]), "support": expected[t]}
                       for t in sorted(found.keys() | expected.keys())}
    return out
