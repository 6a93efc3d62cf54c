"""Sentence-pair readers: the three formats, file:line errors, and the real STS sets."""

import gzip

import numpy as np
import pytest

from jaxformer.io.sts_pairs import nli_triplets, read_sts_pairs


def test_pairs_format(tmp_path):
    f = tmp_path / "p.data"
    f.write_text("一个男人在弹吉他。\t一个人在弹吉他。\t4.2\n\n两只狗\t一只猫\t0\n", encoding="utf-8")
    pairs = read_sts_pairs(f)
    assert pairs.s1 == ("一个男人在弹吉他。", "两只狗") and pairs.s2[1] == "一只猫"
    np.testing.assert_array_equal(pairs.scores, np.float32([4.2, 0.0]))
    np.testing.assert_array_equal(pairs.lines, [1, 3])  # the blank line 2 is skipped, numbered
    assert pairs.sentences() == ["一个男人在弹吉他。", "两只狗", "一个人在弹吉他。", "一只猫"]


def test_paws_format_checks_the_header(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("id\tsentence1\tsentence2\tlabel\n7\t甲\t乙\t1\n", encoding="utf-8")
    assert read_sts_pairs(f, "paws").scores.tolist() == [1.0]
    f.write_text("sentence1\tsentence2\tlabel\n甲\t乙\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.tsv:1: expected the header"):
        read_sts_pairs(f, "paws")


def test_stsbenchmark_gz_format_and_split(tmp_path):
    rows = ["split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2",
            "train\tmain-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
            "test\tmain-news\theadlines\t2016\t0002\t0.250\tA man \"quoted\".\tA cat.",
            ""]
    f = tmp_path / "stsbenchmark.tsv.gz"
    f.write_bytes(gzip.compress("\n".join(rows).encode("utf-8")))
    everything = read_sts_pairs(f, "stsb")
    assert len(everything) == 2 and everything.s1[1] == 'A man "quoted".'  # no CSV quoting
    test = read_sts_pairs(f, "stsb", split="test")
    assert test.scores.tolist() == [0.25] and test.lines.tolist() == [3]


@pytest.mark.parametrize("fmt,text,match", [
    ("pairs", "a\tb\t1\na\tb\n", r"x:2: expected 3 tab-separated fields, found 2"),
    ("pairs", "a\tb\tsimilar\n", r"x:1: expected the score to be float, found 'similar'"),
    ("pairs", "a\tb\tnan\n", r"x:1: expected a finite score"),
    ("paws", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\tyes\n", r"x:2: expected the label"),
    ("stsb", "split\tscore\tsentence1\tsentence2\ntest\t1\ta\n", r"x:2: expected 4 tab"),
    ("stsb", "score\tsentence1\n", r"x:1: expected a header naming"),
])
def test_malformed_line_is_reported_as_file_line(tmp_path, fmt, text, match):
    f = tmp_path / "x"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_sts_pairs(f, fmt)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="format: expected one of"):
        read_sts_pairs(tmp_path / "x", "csv")
    with pytest.raises(ValueError, match="split: expected None"):
        read_sts_pairs(tmp_path / "x", "pairs", split="test")
    with pytest.raises(FileNotFoundError, match="path: expected an existing pairs file"):
        read_sts_pairs(tmp_path / "missing")


def test_nli_triplets(tmp_path):
    f = tmp_path / "nli.txt"
    f.write_text("P\tE1\tentailment\nP\tN\tneutral\nP\tC\tcontradiction\nP\tE2\tentailment\n"
                 "Q\tE\tentailment\n", encoding="utf-8")
    assert nli_triplets(f) == [("P", "E1", "C"), ("P", "E2", "C")]  # Q has no contradiction
    f.write_text("P\tE\tmaybe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"nli.txt:1: expected the label entailment"):
        nli_triplets(f)


@pytest.mark.parametrize("rel,fmt,n", [
    ("chinese_stsb_cnsd/STS-B.test.data", "pairs", 1361),
    ("csts/LCQMC/test.txt", "pairs", 12500),
    ("csts/PAWS-X/test_2k.tsv", "paws", 2000),
    ("csts/AFQMC/dev.txt", "pairs", 4316),
])
def test_real_sts_sets(data_dir, rel, fmt, n):
    pairs = read_sts_pairs(data_dir / rel, fmt)
    assert len(pairs) == n
    lo, hi = (0, 5) if "cnsd" in rel else (0, 1)
    assert pairs.scores.min() == lo and pairs.scores.max() == hi
