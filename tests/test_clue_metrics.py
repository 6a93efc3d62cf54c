"""`jaxformer.tasks.clue.metrics` and `chid_decode`: every expected value is worked by hand from
the official definitions (the CMRC2018 evaluation script, conlleval's chunk rules, the
Hungarian assignment), with the arithmetic in the comments."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.tasks.clue.chid_decode import decode_chid, hungarian_assign, independent_argmax
from jaxformer.tasks.clue.metrics import (
    CMRC2018_PUNCTUATION,
    accuracy,
    bio_to_spans,
    cmrc2018_em,
    cmrc2018_f1,
    cmrc2018_normalize,
    cmrc2018_scores,
    entity_f1,
    longest_common_substring,
    mixed_segmentation,
)

# ---------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_percent_of_equal_positions():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 75.0  # 3 of 4 right: 100 * 3 / 4
    assert accuracy(np.array([0, 1, 1]), np.array([1, 1, 0])) == pytest.approx(100 / 3)  # 1 of 3
    assert accuracy(["a", "b"], ["a", "b"]) == 100.0
    assert accuracy(jnp.array([2, 0]), np.array([2, 1])) == 50.0  # JAX arrays too
    assert accuracy(["a"], ["b"]) == 0.0


def test_accuracy_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"predictions and labels: expected the same length, "
                                         r"got 3 and 2"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"predictions: expected at least one item, got 0"):
        accuracy([], [])
    with pytest.raises(ValueError, match=r"labels: expected a 1-D sequence, got an array of "
                                         r"shape \(2, 2\)"):
        accuracy(np.zeros(2), np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# CMRC2018: normalisation and segmentation


def test_punctuation_set_is_the_official_sp_char_list():
    # 11 ASCII + 21 full-width single characters; the list's "……" entry is two characters, so
    # it never equals one character of the text.
    assert len(CMRC2018_PUNCTUATION) == 32
    assert set("-:_*^/\\~`+=") <= CMRC2018_PUNCTUATION
    assert set("，。：？！“”；’《》·、「」（）－～『』") <= CMRC2018_PUNCTUATION
    for kept in ".,?!;'\"()…‘—・":
        assert kept not in CMRC2018_PUNCTUATION, kept


def test_normalize_lowercases_strips_then_drops_punctuation():
    assert cmrc2018_normalize("《红楼梦》") == "红楼梦"
    assert cmrc2018_normalize("  CMRC-2018_v2  ") == "cmrc2018v2"
    assert cmrc2018_normalize("a.b, c!") == "a.b, c!"  # ASCII . , ! are not in the list
    assert cmrc2018_normalize("好……") == "好……"  # U+2026 alone is never matched
    # Outer whitespace goes first, so a space exposed by removing punctuation stays.
    assert cmrc2018_normalize("abc 。") == "abc "
    assert cmrc2018_normalize("\u3000中 国\u3000") == "中 国"  # ideographic space is whitespace


@pytest.mark.parametrize("text, tokens", [
    # Each CJK character is a token; ASCII runs stay whole (lowercased).
    ("2018年CMRC比赛", ["2018", "年", "cmrc", "比", "赛"]),
    # Punctuation is dropped without ending the run: 1990 and 2000 merge.
    ("1990-2000年", ["19902000", "年"]),
    # Whitespace between CJK characters vanishes; inside a run it separates words.
    ("中 国", ["中", "国"]),
    ("莱昂纳尔·里奇(Lionel Richie)", ["莱", "昂", "纳", "尔", "里", "奇", "(", "lionel",
                                     "richie", ")"]),
    # NLTK's rules on the runs: decimal and thousands separators stay, a final period splits.
    ("364.6公里", ["364.6", "公", "里"]),
    ("NT$25,000", ["nt", "$", "25,000"]),
    ("a, b", ["a", ",", "b"]),
    ("U.S.A.", ["u.s.a", "."]),
    ("wait...", ["wait", "..."]),
    ('（"Alexandra"）', ["``", "alexandra", "''"]),  # （） removed; " opens, then closes
    ("Richie's", ["richie", "'s"]),
    ("don't", ["do", "n't"]),
    ("'shade'", ["'", "shade", "'"]),
    ("北纬40°15′—40°30′", ["北", "纬", "40°15′", "—", "40°30′"]),  # — (U+2014) is a token
    # Only U+4E00..U+9FA5 counts as CJK: U+3469 and U+3B74 (extension A) form a run.
    ("侏㑩纪", ["侏", "㑩", "纪"]),
    ("㑩㭴", ["㑩㭴"]),
])
def test_mixed_segmentation(text, tokens):
    assert mixed_segmentation(text) == tokens


def test_mixed_segmentation_keeping_punctuation():
    # Without removal each listed character is its own token and ends the run.
    assert mixed_segmentation("1990-2000年", remove_punctuation=False) == ["1990", "-", "2000",
                                                                         "年"]
    assert mixed_segmentation("《红楼梦》", remove_punctuation=False) == ["《", "红", "楼", "梦",
                                                                        "》"]


def test_longest_common_substring_is_contiguous():
    assert longest_common_substring("abcde", "xbcdy") == 3  # "bcd"
    # "abd" is a common subsequence of length 3, but no common run is longer than 1.
    assert longest_common_substring("abcd", "acbd") == 1
    assert longest_common_substring([], ["a"]) == 0
    assert longest_common_substring(["北", "京"], ["北", "京"]) == 2


# ---------------------------------------------------------------------------------------------
# CMRC2018: per-question EM and F1


def test_f1_uses_the_longest_common_substring_not_token_overlap():
    # [北 京 大 学] vs [大 学 北 京]: longest common run 2 ("北京" or "大学").
    # p = 2/4, r = 2/4, F1 = 2 * .5 * .5 / (.5 + .5) = 0.5. A bag-of-tokens overlap (SQuAD)
    # would count all 4 tokens and give 1.0.
    assert cmrc2018_f1("大学北京", ["北京大学"]) == pytest.approx(0.5)
    assert cmrc2018_em("大学北京", ["北京大学"]) == 0.0


def test_f1_and_em_take_the_best_reference():
    prediction = "北京大学的"  # [北 京 大 学 的], 5 tokens
    # vs "北京大学" (4 tokens): run 4, p = 4/5, r = 4/4, F1 = 2 * .8 * 1 / 1.8 = 8/9.
    # vs "北大" (2 tokens): 北 and 大 are not adjacent in the prediction, run 1,
    #   p = 1/5, r = 1/2, F1 = 2 * .1 / .7 = 2/7.
    assert cmrc2018_f1(prediction, ["北大"]) == pytest.approx(2 / 7)
    assert cmrc2018_f1(prediction, ["北大", "北京大学"]) == pytest.approx(8 / 9)
    assert cmrc2018_em(prediction, ["北大", "北京大学"]) == 0.0
    assert cmrc2018_em("北京大学", ["北大", "北京大学"]) == 1.0


def test_mixed_chinese_english_digits():
    # [2018 年] vs [2018 年 5 月]: run 2, p = 2/4, r = 2/2, F1 = 2 * .5 * 1 / 1.5 = 2/3.
    assert cmrc2018_f1("2018年5月", ["2018年"]) == pytest.approx(2 / 3)
    # Digit runs are single tokens: "2018" vs "20185" share nothing.
    assert cmrc2018_f1("20185", ["2018"]) == 0.0
    # [billy joel] vs [比 利 乔 尔 ( billy joel )]: run 2, p = 2/2, r = 2/8,
    # F1 = 2 * 1 * .25 / 1.25 = 0.4.
    assert cmrc2018_f1("Billy Joel", ["比利·乔尔(Billy Joel)"]) == pytest.approx(0.4)
    assert cmrc2018_em("cmrc", ["CMRC"]) == 1.0  # lowercased


def test_punctuation_and_whitespace_in_em_and_f1():
    assert cmrc2018_em("红楼梦", ["《红楼梦》"]) == 1.0
    assert cmrc2018_f1("红楼梦", ["《红楼梦》"]) == 1.0
    # Inner whitespace survives normalisation (EM 0) but not segmentation (F1 1).
    assert cmrc2018_em("中 国", ["中国"]) == 0.0
    assert cmrc2018_f1("中 国", ["中国"]) == 1.0
    assert cmrc2018_em("  中国\n", ["中国"]) == 1.0
    # Strip before removal: "abc 。" -> "abc " != "abc", while both segment to [abc].
    assert cmrc2018_em("abc 。", ["abc"]) == 0.0
    assert cmrc2018_f1("abc 。", ["abc"]) == 1.0
    # A reference that is only punctuation matches an empty prediction on EM, but F1 has no
    # tokens to share (the official script gives 0 when the common run is 0).
    assert cmrc2018_em("", ["。"]) == 1.0
    assert cmrc2018_f1("", ["。"]) == 0.0


def test_per_question_bad_references():
    with pytest.raises(TypeError, match=r"references: expected a list of answer strings, got str"):
        cmrc2018_f1("北京", "北京")
    with pytest.raises(ValueError, match=r"references: expected at least one reference answer"):
        cmrc2018_em("北京", [])


# ---------------------------------------------------------------------------------------------
# CMRC2018: corpus scores


def test_scores_average_over_all_questions_missing_count_zero():
    references = {"q1": ["北京大学"], "q2": ["2018年"], "q3": ["上海"], "q4": ["长江", "黄河"]}
    predictions = {"q1": "《北京大学》",  # EM 1, F1 1
                   "q2": "2018年5月",    # EM 0, F1 2/3 (worked above)
                   # q3 missing: skipped, scores 0 on both
                   "q4": "珠江",          # EM 0; F1 1/2: with 长江 the run is 江 (1 token),
                                         #   p = r = 1/2, F1 = 1/2; with 黄河 0; max 1/2
                   "q9": "not a question"}  # ignored, as the official script does
    got = cmrc2018_scores(predictions, references)
    # EM = 100 * (1 + 0 + 0 + 0) / 4 = 25; F1 = 100 * (1 + 2/3 + 0 + 1/2) / 4 = 100 * 13/24.
    assert got["em"] == pytest.approx(25.0)
    assert got["f1"] == pytest.approx(100 * 13 / 24)  # 54.1667
    assert got["average"] == pytest.approx((25.0 + 100 * 13 / 24) / 2)  # 39.5833
    assert (got["total"], got["skipped"]) == (4, 1)


def test_scores_all_missing_is_zero():
    got = cmrc2018_scores({}, {"q1": ["北京"], "q2": ["上海"]})
    assert got == {"em": 0.0, "f1": 0.0, "average": 0.0, "total": 2, "skipped": 2}


def test_scores_bad_input():
    with pytest.raises(ValueError, match=r"references: expected at least one question, got 0"):
        cmrc2018_scores({"q1": "a"}, {})
    with pytest.raises(TypeError, match=r"references\['q1'\]: expected a list of answer "
                                        r"strings, got str"):
        cmrc2018_scores({"q1": "北京"}, {"q1": "北京"})
    with pytest.raises(ValueError, match=r"references\['q1'\]: expected at least one reference"):
        cmrc2018_scores({"q1": "北京"}, {"q1": []})


# ---------------------------------------------------------------------------------------------
# NER: BIO decoding and entity F1


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
    # conlleval: an I- with no open entity of its type starts one.
    (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),
    (["I-ORG"], [("ORG", 0, 1)]),
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
    # B- always starts a new entity, even right after one of its type.
    (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
    (["B-GPE-LOC", "I-GPE-LOC"], [("GPE-LOC", 0, 2)]),  # the type is all after "B-"
    (["O", "O"], []),
    ([], []),
])
def test_bio_to_spans(tags, spans):
    assert bio_to_spans(tags) == spans


@pytest.mark.parametrize("bad, index", [(["O", "X-PER"], 1), (["B-"], 0), (["B"], 0),
                                        (["o"], 0), (["O", "O", ""], 2)])
def test_bio_to_spans_rejects_unknown_tags(bad, index):
    with pytest.raises(ValueError, match=rf"tags\[{index}\]: expected 'O', 'B-<type>' or "
                                         r"'I-<type>', got"):
        bio_to_spans(bad)


def test_entity_f1_micro_and_per_type():
    gold = [{("PER", 0, 2), ("LOC", 5, 7)},
            {("PER", 1, 3), ("ORG", 4, 8)}]
    predicted = [{("PER", 0, 2), ("LOC", 5, 6)},                 # LOC boundary off by one
                 [("PER", 1, 3), ("ORG", 4, 8), ("MISC", 9, 10)]]  # MISC has no gold
    got = entity_f1(predicted, gold)
    # right: PER 2, ORG 1 -> 3. predicted: PER 2, LOC 1, ORG 1, MISC 1 -> 5. gold: 4.
    # precision = 3/5 = 60, recall = 3/4 = 75, F1 = 2 * 3 / (5 + 4) = 66.67.
    assert got["precision"] == pytest.approx(60.0)
    assert got["recall"] == pytest.approx(75.0)
    assert got["f1"] == pytest.approx(200 / 3)
    per = got["per_type"]
    assert list(per) == ["LOC", "MISC", "ORG", "PER"]
    assert per["PER"] == pytest.approx({"f1": 100.0, "precision": 100.0, "recall": 100.0,
                                        "support": 2})
    assert per["ORG"] == pytest.approx({"f1": 100.0, "precision": 100.0, "recall": 100.0,
                                        "support": 1})
    # LOC: 0 right of 1 predicted and 1 gold. MISC: recall 0/0 -> 0 (zero denominator).
    assert per["LOC"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 1}
    assert per["MISC"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "support": 0}


def test_entity_f1_from_bio_tags_and_duplicates():
    gold = [bio_to_spans(["B-PER", "I-PER", "O", "B-LOC", "I-LOC"])]   # PER 0-2, LOC 3-5
    pred = [bio_to_spans(["B-PER", "I-PER", "O", "I-LOC", "O"])]       # PER 0-2, LOC 3-4
    got = entity_f1(pred, gold)
    # right 1 (PER) of 2 predicted and 2 gold: p = r = F1 = 50.
    assert (got["f1"], got["precision"], got["recall"]) == (50.0, 50.0, 50.0)
    # A predicted entity listed twice counts once (sets), as does numpy's integer type.
    twice = entity_f1([[("PER", np.int64(0), 2), ("PER", 0, 2)]], [{("PER", 0, 2)}])
    assert (twice["f1"], twice["precision"], twice["recall"]) == (100.0, 100.0, 100.0)


def test_entity_f1_no_entities_anywhere():
    assert entity_f1([set(), set()], [set(), set()]) == {"f1": 0.0, "precision": 0.0,
                                                         "recall": 0.0, "per_type": {}}


def test_entity_f1_bad_input():
    with pytest.raises(ValueError, match=r"predicted and gold: expected the same length, got 1 "
                                         r"and 2"):
        entity_f1([set()], [set(), set()])
    with pytest.raises(ValueError, match=r"predicted: expected at least one item, got 0"):
        entity_f1([], [])
    with pytest.raises(ValueError, match=r"gold\[1\]: expected entities as \(type: str, start: "
                                         r"int, end: int\) tuples, got \('PER', 1\)"):
        entity_f1([set(), set()], [set(), {("PER", 1)}])


# ---------------------------------------------------------------------------------------------
# CHID decoding


SCORES = [[0.9, 0.8, 0.1],
          [0.7, 0.2, 0.1]]


def test_hungarian_differs_from_argmax_by_hand():
    # argmax picks candidate 0 for both blanks (0.9 and 0.7), reusing one idiom.
    assert independent_argmax(SCORES) == [0, 0]
    # Injective choices and totals: (0,1) 0.9+0.2=1.1, (0,2) 1.0, (1,0) 0.8+0.7=1.5,
    # (1,2) 0.9, (2,0) 0.8, (2,1) 0.3 -> the best is blank 0 -> 1, blank 1 -> 0.
    assert hungarian_assign(SCORES) == [1, 0]
    # With gold [1, 0]: Hungarian 2 of 2 right, argmax 1 of 2.
    assert accuracy(hungarian_assign(SCORES), [1, 0]) == 100.0
    assert accuracy(independent_argmax(SCORES), [1, 0]) == 50.0


def test_decode_chid_groups():
    got = decode_chid([np.array(SCORES), [[0.1, 0.5, 0.4]]])
    assert got == {"hungarian": [[1, 0], [1]], "argmax": [[0, 0], [1]]}
    assert decode_chid([]) == {"hungarian": [], "argmax": []}


def test_chid_bad_input():
    with pytest.raises(ValueError, match=r"scores: expected blanks <= candidates, got shape "
                                         r"\(3, 2\)"):
        hungarian_assign(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"scores: expected a \[blanks, candidates\] matrix, "
                                         r"got shape \(3,\)"):
        independent_argmax([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"scores: expected finite scores, got 1 NaN"):
        hungarian_assign([[0.0, float("nan")]])
    with pytest.raises(ValueError, match=r"groups\[1\]: expected blanks <= candidates"):
        decode_chid([np.zeros((1, 2)), np.zeros((2, 1))])


@st.composite
def _score_matrices(draw):
    blanks = draw(st.integers(1, 5))
    candidates = draw(st.integers(blanks, 6))
    values = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    return np.array(draw(st.lists(st.lists(values, min_size=candidates, max_size=candidates),
                                  min_size=blanks, max_size=blanks)))


@settings(max_examples=50, deadline=None)
@given(scores=_score_matrices(), data=st.data())
def test_hungarian_is_a_valid_assignment_at_least_as_good_as_any_permutation(scores, data):
    blanks, candidates = scores.shape
    chosen = hungarian_assign(scores)
    assert len(chosen) == blanks and len(set(chosen)) == blanks
    assert all(0 <= j < candidates for j in chosen)
    total = scores[np.arange(blanks), chosen].sum()
    permutation = data.draw(st.permutations(range(candidates)))[:blanks]
    assert total >= scores[np.arange(blanks), permutation].sum() - 1e-9
    # and it is the maximum over every injective choice (at most 6!/1! = 720 of them)
    best = max(scores[np.arange(blanks), list(p)].sum()
               for p in itertools.permutations(range(candidates), blanks))
    assert total == pytest.approx(best, abs=1e-9)
