"""Generation metrics on character-split strings: hand-worked cases, and the reference packages
of Su's scoring loop (the `rouge` package, 1.0.0 being what it installed in 2020, and nltk's
``sentence_bleu`` with smoothing method 1), on a few hundred random Chinese strings, to 1e-6.
"""

import importlib.metadata
import math
import re

import numpy as np
import pytest

from conftest import require
from jaxformer.tasks.generation_metrics import (bleu, char_split, generation_scores, rouge_l,
                                                rouge_n)

rouge = require("rouge")
bleu_score = require("nltk.translate.bleu_score")

TOL = 1e-6
F_EPS = 1e-8  # the `rouge` package's F = 2PR / (P + R + 1e-8)


def f_score(p, r):
    return 2 * p * r / (p + r + F_EPS)


# ------------------------------------------------------------------------ hand-worked cases


def test_char_split():
    assert char_split("基于BP神经网络") == "基 于 b p 神 经 网 络"
    assert char_split("基于 BP\t网络", lower=False) == "基 于 B P 网 络"   # whitespace dropped
    assert char_split("") == ""
    # Without whitespace it is Su's ' '.join(text).lower() exactly.
    assert char_split("Fe3O4/C复合材料.") == " ".join("Fe3O4/C复合材料.").lower()


def test_one_substitution():
    # hyp 基于神经 vs ref 基于神网 (a b c d vs a b c e):
    #   Rouge-1: 3 of 4 unigrams match both ways, P = R = 3/4;
    #   Rouge-2: {ab, bc} of {ab, bc, cd} and of {ab, bc, ce}, P = R = 2/3;
    #   Rouge-L: LCS abc, 3 distinct tokens of 4 on each side, P = R = 3/4;
    #   BLEU: p1 = 3/4, p2 = 2/3, p3 = 1/2 (abc of abc, bcd), p4 = 0 -> 0.1/1 (smoothing 1),
    #         c = r = 4 so BP = exp(1 - 4/4) = 1: BLEU = (3/4 * 2/3 * 1/2 * 1/10)^(1/4) = 0.3976.
    hyp, ref = char_split("基于神经"), char_split("基于神网")
    assert rouge_n(hyp, ref, 1) == pytest.approx(f_score(3 / 4, 3 / 4), abs=1e-12)
    assert rouge_n(hyp, ref, 2) == pytest.approx(f_score(2 / 3, 2 / 3), abs=1e-12)
    assert rouge_l(hyp, ref) == pytest.approx(f_score(3 / 4, 3 / 4), abs=1e-12)
    assert bleu(hyp, ref) == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 0.1) ** 0.25, abs=1e-12)
    assert bleu(hyp, ref) == pytest.approx(0.39763536, abs=1e-8)


def test_repeated_characters():
    # hyp 的的的的 vs ref 的是:
    #   Rouge-1 clips counts: min(4, 1) = 1 match, P = 1/4, R = 1/2, F = 1/3 (counting distinct
    #     unigrams, rouge 1.0.1's default, would give P = 1, F = 2/3);
    #   Rouge-2: no bigram matches, F = 0;
    #   Rouge-L over distinct tokens: LCS 的, {的} has 1 token; distinct hyp {的} = 1, distinct
    #     ref {的, 是} = 2: P = 1, R = 1/2, F = 2/3 (Lin's LCS F would be 1/3);
    #   BLEU: p1 = 1/4 (clipped), p2 = 0 -> 0.1/3, p3 -> 0.1/2, p4 -> 0.1/1; c = 4 > r = 2, BP = 1.
    hyp, ref = char_split("的的的的"), char_split("的是")
    assert rouge_n(hyp, ref, 1) == pytest.approx(f_score(1 / 4, 1 / 2), abs=1e-12)
    assert rouge_n(hyp, ref, 2) == 0.0
    assert rouge_l(hyp, ref) == pytest.approx(f_score(1.0, 1 / 2), abs=1e-12)
    assert bleu(hyp, ref) == pytest.approx((1 / 4 * 0.1 / 3 * 0.1 / 2 * 0.1) ** 0.25, abs=1e-12)


def test_rouge_l_takes_the_lcs_the_package_backtracks_to():
    # ref 的的是, hyp 的是的 (a a b vs a b a): both "a b" and "a a" are LCSs of length 2. From
    # cell (3, 3): b != a, and (2, 3) = 2 is not > (3, 2) = 2, so step back in the hypothesis;
    # then b = b, a = a: the LCS "a b", 2 distinct tokens of 2 per side, P = R = 1.
    assert rouge_l(char_split("的是的"), char_split("的的是")) == pytest.approx(
        f_score(1.0, 1.0), abs=1e-12)


def test_dots_cut_rouge_sentences_but_are_bleu_tokens():
    # "3.5" -> "3 . 5": Rouge sees the sentences "3" and "5" (tokens 3, 5; the bigram 3 5 runs
    # across the cut); BLEU sees 3 . 5: p1 = p2 = p3 = 1, no 4-gram -> 0.1/1, c = r so BP = 1.
    hyp = ref = char_split("3.5")
    assert rouge_n(hyp, ref, 1) == pytest.approx(f_score(1, 1), abs=1e-12)
    assert rouge_n(hyp, ref, 2) == pytest.approx(f_score(1, 1), abs=1e-12)
    assert bleu(hyp, ref) == pytest.approx(0.1 ** 0.25, abs=1e-12)
    # A lone dot leaves no Rouge sentence (the package raises): Rouge 0, BLEU as usual (p1 = 1,
    # p2..p4 -> 0.1, BP = exp(1 - 3/1)).
    assert rouge_n(".", "3 . 5", 1) == rouge_l(".", "3 . 5") == 0.0
    assert bleu(".", "3 . 5") == pytest.approx(math.exp(1 - 3) * 0.1 ** 0.75, abs=1e-12)


@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_prediction_scores_zero(empty):
    ref = char_split("基于神网")
    assert rouge_n(empty, ref, 1) == rouge_n(empty, ref, 2) == rouge_l(empty, ref) == 0.0
    assert bleu(empty, ref) == 0.0


def test_corpus_means_in_percent():
    preds, refs = ["基于神经", "的的的的", ""], ["基于神网", "的是", "标题"]
    got = generation_scores(preds, refs)
    # the two worked cases above, and 0 for the empty prediction, over N = 3
    assert got["rouge-1"] == pytest.approx(100 * (f_score(.75, .75) + f_score(.25, .5)) / 3)
    assert got["rouge-2"] == pytest.approx(100 * f_score(2 / 3, 2 / 3) / 3)
    assert got["rouge-l"] == pytest.approx(100 * (f_score(.75, .75) + f_score(1, .5)) / 3)
    assert got["bleu"] == pytest.approx(
        100 * ((0.025 ** 0.25) + (1 / 4 * 0.1 / 3 * 0.1 / 2 * 0.1) ** 0.25) / 3)
    assert list(got) == ["rouge-1", "rouge-2", "rouge-l", "bleu"]


# ------------------------------------------------------------------------ bad input


def test_bad_input():
    with pytest.raises(ValueError, match=re.escape(
            "predictions and references must have the same length, got 2 predictions and 1 "
            "references")):
        generation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one example, got 0"):
        generation_scores([], [])
    with pytest.raises(TypeError, match=re.escape(
            "predictions must be a sequence of str (one text per example), got str")):
        generation_scores("标题", ["标题"])
    with pytest.raises(ValueError, match=re.escape(
            "references[1] must contain a non-whitespace character, got ' '")):
        generation_scores(["a", "b"], ["a", " "])
    with pytest.raises(ValueError, match=re.escape("references[0] has no Rouge sentence")):
        generation_scores(["a"], ["."])
    with pytest.raises(ValueError, match=re.escape("reference must contain at least one token")):
        bleu("a", "")
    with pytest.raises(ValueError, match=re.escape("n must be an int >= 1, got 0")):
        rouge_n("a", "a", 0)


# ------------------------------------------------------------------------ reference packages

# Su's scores come from rouge 1.0.0, whose Rouge-N counts clipped n-grams (exclusive=False, its
# default) and whose Rouge-L always counts distinct tokens. rouge 1.0.1 made exclusive=True the
# default for both, so the references below name the option: that is Su's `Rouge()` on 1.0.0,
# and the same numbers on 1.0.1.
ROUGE_N = rouge.Rouge(metrics=["rouge-1", "rouge-2"], exclusive=False)
ROUGE_L = rouge.Rouge(metrics=["rouge-l"], exclusive=True)
SMOOTH = bleu_score.SmoothingFunction().method1

# Common characters, so that random strings share many; '.' exercises the Rouge sentence cut.
CHARS = list("的是了不在人有我他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去"
             "之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方")


def random_pairs(count, seed=0):
    """Independent strings over small alphabets (many repeated characters, some dots), and
    near-copies of the reference (a few characters replaced, dropped or inserted), where the
    higher-order n-grams match too, as in a trained model's output."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < count:
        alphabet = CHARS[: rng.integers(3, 40)] + ["."] * int(rng.random() < 0.3)
        ref = "".join(rng.choice(alphabet, rng.integers(1, 30)))
        if len(pairs) % 2:
            hyp = "".join(rng.choice(alphabet, rng.integers(0, 30)))
        else:
            hyp = list(ref)
            for _ in range(rng.integers(0, 4)):
                at = int(rng.integers(0, len(hyp) + 1))
                edit = rng.integers(3)
                if edit == 0 and at < len(hyp):
                    hyp[at] = str(rng.choice(alphabet))
                elif edit == 1 and at < len(hyp):
                    del hyp[at]
                else:
                    hyp.insert(at, str(rng.choice(alphabet)))
            hyp = "".join(hyp)
        if ref.strip("."):  # the packages raise on a reference without a Rouge sentence
            pairs.append((hyp, ref))
    return pairs


PAIRS = random_pairs(400)


def su_scores(prediction, target):
    """One example of Su's loop (WoBERT's test/csl.py), with the packages."""
    title, pred = " ".join(target).lower(), " ".join(prediction).lower()
    if not pred.strip():
        return dict.fromkeys(["rouge-1", "rouge-2", "rouge-l", "bleu"], 0.0)
    try:
        scores = {**ROUGE_N.get_scores(hyps=pred, refs=title)[0],
                  **ROUGE_L.get_scores(hyps=pred, refs=title)[0]}
        out = {name: scores[name]["f"] for name in ("rouge-1", "rouge-2", "rouge-l")}
    except ValueError:  # "Hypothesis is empty.": a prediction of dots only, which we score 0
        out = dict.fromkeys(["rouge-1", "rouge-2", "rouge-l"], 0.0)
    out["bleu"] = bleu_score.sentence_bleu(references=[title.split(" ")],
                                           hypothesis=pred.split(" "), smoothing_function=SMOOTH)
    return out


def test_rouge_and_bleu_equal_the_packages():
    worst = 0.0
    for prediction, target in PAIRS:
        hyp, ref = char_split(prediction), char_split(target)
        want = su_scores(prediction, target)
        got = {"rouge-1": rouge_n(hyp, ref, 1), "rouge-2": rouge_n(hyp, ref, 2),
               "rouge-l": rouge_l(hyp, ref), "bleu": bleu(hyp, ref)}
        for name in got:
            assert math.isclose(got[name], want[name], rel_tol=0, abs_tol=TOL), (
                name, prediction, target, got[name], want[name])
            worst = max(worst, abs(got[name] - want[name]))
    assert worst < TOL


def test_corpus_scores_equal_su_loop():
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    want = {name: 0.0 for name in ("rouge-1", "rouge-2", "rouge-l", "bleu")}
    for prediction, target in PAIRS:
        for name, value in su_scores(prediction, target).items():
            want[name] += value
    got = generation_scores(preds, refs)
    for name in want:
        assert got[name] == pytest.approx(100 * want[name] / len(PAIRS), abs=100 * TOL)


def test_rouge_1_0_1_default_counts_distinct_ngrams():
    """The version difference, shown where the package's option exists (both versions):
    distinct n-grams (exclusive=True) score the repeated-character case differently."""
    hyp, ref = char_split("的的的的"), char_split("的是")
    distinct = rouge.Rouge(metrics=["rouge-1"], exclusive=True).get_scores(hyp, ref)[0]
    assert distinct["rouge-1"]["f"] == pytest.approx(f_score(1.0, 0.5), abs=1e-12)
    assert rouge_n(hyp, ref, 1) == pytest.approx(f_score(0.25, 0.5), abs=1e-12)
    installed = importlib.metadata.version("rouge")
    if installed == "1.0.0":  # Su's call, Rouge() with its defaults, is the clipped count
        default = rouge.Rouge().get_scores(hyp, ref)[0]
        assert default["rouge-1"]["f"] == pytest.approx(rouge_n(hyp, ref, 1), abs=1e-12)
