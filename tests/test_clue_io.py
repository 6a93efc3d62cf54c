"""CLUE / FewCLUE readers, split discovery and submission files.

Format tests write a few records per task in the official formats (the README examples of
CLUE, FewCLUE, CLUENER2020, C3 and CMRC2018) into tmp_path; the real-data tests read every task
folder of the shared data folder (`data_dir` fixture, ``JAXFORMER_DATA``) and check its README's
counts.
"""

import json

import pytest

from jaxformer.io import clue
from jaxformer.io import clue_submit as cs
from jaxformer.io.zh_tasks import MissingDataError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jl(*records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# --------------------------------------------------------------------------- official formats

WSC_TARGET = {"span2_index": 37, "span1_index": 5, "span1_text": "床", "span2_text": "它"}
WSC_TEXT = "这时候放在床上枕头旁边的手机响了，我感到奇怪，因为欠费已被停机两个月，现在它突然响了。"

# task -> (JSON-lines records, expected records); the first record is well formed in every case.
JSON_LINES = {
    "iflytek": ([{"label": "110", "label_des": "社区超市", "sentence": "朴朴快送超市"},
                 {"id": 7, "sentence": "大疆商城"}],
                [clue.TextExample(0, "朴朴快送超市", 110), clue.TextExample(7, "大疆商城", None)]),
    "tnews": ([{"label": "102", "label_desc": "news_entertainment", "sentence": "江疏影甜甜圈自拍",
                "keywords": "江疏影", "id": 3},
               {"label": 116, "label_desc": "news_game", "sentence": "电竞", "id": "4"}],
              [clue.TextExample(3, "江疏影甜甜圈自拍", 2), clue.TextExample("4", "电竞", 14)]),
    "afqmc": ([{"sentence1": "双十一花呗提额在哪", "sentence2": "里可以提花呗额度", "label": "0"}],
              [clue.PairExample(0, "双十一花呗提额在哪", "里可以提花呗额度", 0)]),
    "cmnli": ([{"sentence1": "新的权利已经足够好了", "sentence2": "每个人都很喜欢最新的福利",
                "label": "neutral"},
               {"sentence1": "他们整合计划", "sentence2": "计划得到了巩固", "label": "-"},
               {"sentence1": "神圣对她来说并不神秘。", "sentence2": "女人对神圣的东西很熟悉。",
                "label": "entailment"}],
              [clue.PairExample(0, "新的权利已经足够好了", "每个人都很喜欢最新的福利", 2),
               clue.PairExample(2, "神圣对她来说并不神秘。", "女人对神圣的东西很熟悉。", 1)]),
    "ocnli": ([{"level": "medium", "sentence1": "身上裹一件工厂发的棉大衣,手插在袖筒里",
                "sentence2": "身上至少一件衣服", "label": "entailment", "label0": "entailment",
                "label1": "entailment", "label2": "entailment", "label3": "entailment",
                "label4": "entailment", "genre": "lit", "prem_id": "lit_635", "id": 0},
               {"level": "hard", "sentence1": "甲", "sentence2": "乙", "label": "-", "id": 1},
               {"sentence1": "来回一趟", "sentence2": "我们有急事", "id": 2}],
              [clue.PairExample(0, "身上裹一件工厂发的棉大衣,手插在袖筒里", "身上至少一件衣服", 1),
               clue.PairExample(2, "来回一趟", "我们有急事", None)]),
    "wsc": ([{"target": WSC_TARGET, "idx": 261, "label": "false", "text": WSC_TEXT},
             {"target": WSC_TARGET, "id": 1, "text": WSC_TEXT}],
            [clue.WscExample(261, WSC_TEXT, ("床", 5), ("它", 37), 1),
             clue.WscExample(1, WSC_TEXT, ("床", 5), ("它", 37), None)]),
    "csl": ([{"id": 1, "abst": "为解决传统均匀FFT波束形成算法引起的3维声呐成像分辨率降低的问题",
              "keyword": ["水声学", "FFT", "波束形成", "3维成像声呐"], "label": "1"}],
            [clue.CslExample(1, "为解决传统均匀FFT波束形成算法引起的3维声呐成像分辨率降低的问题",
                             ("水声学", "FFT", "波束形成", "3维成像声呐"), 1)]),
    "cluener": ([{"text": "北京勘察设计协会副会长兼秘书长周荫如",
                  "label": {"organization": {"北京勘察设计协会": [[0, 7]]},
                            "name": {"周荫如": [[15, 17]]},
                            "position": {"副会长": [[8, 10]], "秘书长": [[12, 14]]}}},
                 {"id": 9, "text": "浙商银行"}],
                [clue.NerExample(0, "北京勘察设计协会副会长兼秘书长周荫如",
                                 (("organization", 0, 8), ("position", 8, 11),
                                  ("position", 12, 15), ("name", 15, 18))),
                 clue.NerExample(9, "浙商银行", None)]),
    "chid": ([{"id": 1421, "candidates": ["巧言令色", "措手不及", "风流人物"],
               "content": "打了马布里一个#idiom#,加上", "answer": 1}],
             [clue.ChidExample(1421, "打了马布里一个#idiom#,加上",
                               ("巧言令色", "措手不及", "风流人物"), ("#idiom#",), (1,))]),
    "bustm": ([{"id": 5, "sentence1": "女孩子到底是不是你", "sentence2": "你不是女孩子吗",
                "label": "1"}],
              [clue.PairExample(5, "女孩子到底是不是你", "你不是女孩子吗", 1)]),
    "eprstmt": ([{"id": 23, "sentence": "外包装上有点磨损，试听后感觉不错", "label": "Positive"}],
                [clue.TextExample(23, "外包装上有点磨损，试听后感觉不错", 1)]),
    "csldcp": ([{"content": "通过几年的观察和实践", "label": "园艺学", "id": 1770}],
               [clue.TextExample(1770, "通过几年的观察和实践", 12)]),
}
# The field each task's reader cannot do without, for the malformed-line test.
REQUIRED = {"iflytek": "sentence", "tnews": "sentence", "afqmc": "sentence1",
            "cmnli": "sentence2", "ocnli": "sentence1", "wsc": "target", "csl": "keyword",
            "cluener": "text", "chid": "candidates", "bustm": "sentence2",
            "eprstmt": "sentence", "csldcp": "content"}


@pytest.mark.parametrize("task", sorted(JSON_LINES))
def test_json_lines_tasks_read_the_official_format(tmp_path, task):
    records, expected = JSON_LINES[task]
    got = clue.read_clue(task, write(tmp_path / f"{task}.json", jl(*records)))
    assert list(got) == expected
    assert got.skipped == (1 if task in ("cmnli", "ocnli") else 0)


@pytest.mark.parametrize("task", sorted(JSON_LINES))
def test_missing_field_names_file_line_and_field(tmp_path, task):
    good = JSON_LINES[task][0][0]
    bad = {k: v for k, v in good.items() if k != REQUIRED[task]}
    path = write(tmp_path / "name.json", jl(good, good, bad))
    with pytest.raises(ValueError, match=rf"name\.json:3: expected a field '{REQUIRED[task]}'"):
        clue.read_clue(task, path)


def test_invalid_json_line_names_file_line(tmp_path):
    path = write(tmp_path / "name.json", jl(*JSON_LINES["tnews"][0]) + '{"sentence": \n')
    with pytest.raises(ValueError, match=r"name\.json:3: expected one JSON object"):
        clue.read_clue("tnews", path)


@pytest.mark.parametrize("task, value, shown", [
    ("tnews", "105", r"'100', '101', '102'"), ("iflytek", "119", r"'0', '1', .*'118'"),
    ("cmnli", "entails", r"\['contradiction', 'entailment', 'neutral'\]"),
    ("wsc", "yes", r"\['true', 'false'\]"), ("eprstmt", "positive", r"'Negative', 'Positive'"),
])
def test_bad_label_names_line_label_and_list(tmp_path, task, value, shown):
    good = JSON_LINES[task][0][0]
    path = write(tmp_path / "name.json", jl(good, good, good | {"label": value}))
    with pytest.raises(ValueError, match=rf"name\.json:3: expected field 'label' to be one of "
                                         rf"the \d+ {task} labels \[?.*{shown}.*found '{value}'"):
        clue.read_clue(task, path)


def test_label_lists():
    assert clue.CLUE_LABELS["tnews"] == ("100", "101", "102", "103", "104", "106", "107", "108",
                                         "109", "110", "112", "113", "114", "115", "116")
    assert clue.CLUE_LABELS["iflytek"] == tuple(str(i) for i in range(119))
    assert len(clue.CLUE_LABELS["csldcp"]) == len(set(clue.CLUE_LABELS["csldcp"])) == 67
    assert clue.clue_task("CLUEWSC") == clue.clue_task("cluewsc2020") == "wsc"
    with pytest.raises(ValueError, match="task must be one of"):
        clue.clue_task("glue")


def test_wsc_span_must_match_text(tmp_path):
    path = write(tmp_path / "wsc.json", jl({"target": WSC_TARGET | {"span1_index": 6},
                                            "idx": 0, "label": "true", "text": WSC_TEXT}))
    with pytest.raises(ValueError, match=r"wsc\.json:1: expected span1_text '床' at index 6"):
        clue.read_clue("cluewsc", path)


@pytest.mark.parametrize("where", [[0, 2], [-4, -1], [1, 4], ["0", "3"]])
def test_cluener_span_must_match_entity(tmp_path, where):
    label = {"company": {"浙商银行": [where]}}
    path = write(tmp_path / "c.json", jl({"text": "浙商银行", "label": label}))
    with pytest.raises(ValueError, match=r"c\.json:1: expected company '浙商银行' at \[start, "):
        clue.read_clue("cluener", path)
    path = write(tmp_path / "t.json", jl({"text": "浙商", "label": {"bank": {"浙商": [[0, 1]]}}}))
    with pytest.raises(ValueError, match=r"t\.json:1: expected entity types among"):
        clue.read_clue("cluener", path)


def test_pair_tsv(tmp_path):
    path = write(tmp_path / "dev.txt",
                 "新的权利\t每个人\tneutral\n甲\t乙\t-\n丙\t丁\tcontradiction\n")
    got = clue.read_clue("cmnli", path)
    assert list(got) == [clue.PairExample(0, "新的权利", "每个人", 2),
                         clue.PairExample(2, "丙", "丁", 0)] and got.skipped == 1
    write(path, "花呗\t借呗\t0\n花呗\t借呗\t2\n")
    with pytest.raises(ValueError, match=r"dev\.txt:2: expected field 'label' to be one of the 2 "
                                         r"afqmc labels \['0', '1'\], found '2'"):
        clue.read_clue("afqmc", path)
    with pytest.raises(ValueError, match="tab-separated file is read only for"):
        clue.read_clue("tnews", path)


def test_chid_fewclue_checks(tmp_path):
    record = JSON_LINES["chid"][0][0]
    path = write(tmp_path / "chid.json", jl(record | {"answer": 3}))
    with pytest.raises(ValueError, match=r"chid\.json:1: expected an answer index in \[0, 3\)"):
        clue.read_clue("chid", path)
    write(path, jl(record | {"candidates": ["巧言令色", 7]}))
    with pytest.raises(ValueError, match=r"chid\.json:1: expected field 'candidates' to be a list "
                                         r"of strings"):
        clue.read_clue("chid", path)
    write(path, jl(record | {"content": "没有空"}))
    with pytest.raises(ValueError, match=r"chid\.json:1: expected one #idiom# blank"):
        clue.read_clue("chid", path)


def test_chid_clue_format_with_answer_file(tmp_path):
    record = {"content": ["今天他们希望能#idiom000378#再进一步。",
                          "去#idiom000379#？还是迎难而上。诚然，#idiom000380#远比随大流更辛苦"],
              "candidates": ["百尺竿头", "随波逐流", "方兴未艾", "逆水行舟"]}
    path = write(tmp_path / "train.json", jl(record))
    write(tmp_path / "train_answer.json", json.dumps(
        {"#idiom000378#": 0, "#idiom000379#": 1, "#idiom000380#": 3}))
    got = clue.read_clue("chid", path)
    assert [(e.id, e.blanks, e.answers) for e in got] == [
        ("0-0", ("#idiom000378#",), (0,)),
        ("0-1", ("#idiom000379#", "#idiom000380#"), (1, 3))]
    assert got[0].candidates == tuple(record["candidates"])
    test = clue.read_clue("chid", write(tmp_path / "test1.1.json", jl(record)))
    assert [e.answers for e in test] == [None, None]
    write(tmp_path / "train_answer.json", json.dumps({"#idiom000378#": 0, "#idiom000379#": 9}))
    with pytest.raises(ValueError, match=r"train\.json:1: expected the answers of "
                                         r"\['#idiom000380#'\]"):
        clue.read_clue("chid", path)


def test_cmrc2018_squad_and_original_formats(tmp_path):
    squad = {"version": "v1.0", "data": [{"id": "DEV_0", "title": "战国无双3", "paragraphs": [
        {"id": "DEV_0", "context": "《战国无双3》是由光荣和ω-force开发的", "qas": [
            {"question": "由哪两个公司开发？", "id": "DEV_0_QUERY_0",
             "answers": [{"text": "光荣和ω-force", "answer_start": 11}]}]}]}]}
    got = clue.read_clue("cmrc2018", write(tmp_path / "dev.json", json.dumps(squad)))
    assert list(got) == [clue.SpanQuestion("DEV_0_QUERY_0", "《战国无双3》是由光荣和ω-force开发的",
                                           "由哪两个公司开发？", (("光荣和ω-force", 11),))]
    original = [{"context_id": "TRIAL_0",
                 "context_text": "工商协进会报告，12月消费者信心上升到78.1",
                 "qas": [{"query_id": "TRIAL_0_QUERY_1",
                          "query_text": "12月的消费者信心指数是多少？",
                          "answers": ["78.1", "78.1", "七十八"]}]}]
    got = clue.read_clue("cmrc2018", write(tmp_path / "trial.json", json.dumps(original)))
    assert got[0].answers == (("78.1", 19), ("78.1", 19), ("七十八", -1))
    del squad["data"][0]["paragraphs"][0]["qas"][0]["question"]
    with pytest.raises(ValueError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: "
                                         r"expected a field 'question'"):
        clue.read_clue("cmrc2018", write(tmp_path / "bad.json", json.dumps(squad)))


def test_c3_format(tmp_path):
    lines = ["男：你今天晚上有时间吗?我们一起去看电影吧?", "女：你喜欢恐怖片和爱情片，但是我喜欢喜剧片。"]
    choices = ["恐怖片", "爱情片", "喜剧片", "科幻片"]
    dialogue = [[lines, [{"question": "女的最喜欢哪种电影?", "choice": choices, "answer": "喜剧片"}],
                 "25-35"]]
    got = clue.read_clue("c3", write(tmp_path / "d-dev.json", json.dumps(dialogue)))
    assert got[0] == clue.ChoiceQuestion("d-dev/25-35/0", tuple(lines), "女的最喜欢哪种电影?",
                                         tuple(choices), 2)
    assert got[0].text == "\n".join(dialogue[0][0])
    test = [[["一段话"], [{"question": "问?", "choice": ["甲", "乙"], "id": 17}], "t-1"]]
    assert clue.read_clue("c3", write(tmp_path / "test1.1.json", json.dumps(test)))[0].id == 17
    dialogue[0][1][0]["answer"] = "动画片"
    with pytest.raises(ValueError, match=r"bad\.json: \[0\]\[1\]\[0\]: expected field 'answer' to "
                                         r"be one of the choices .*found '动画片'"):
        clue.read_clue("c3", write(tmp_path / "bad.json", json.dumps(dialogue)))
    write(tmp_path / "broken.json", '[\n  [\n    ["甲"],\n  ]\n')
    with pytest.raises(ValueError, match=r"broken\.json:4: expected a JSON document"):
        clue.read_clue("c3", tmp_path / "broken.json")


# --------------------------------------------------------------------------- split discovery

def test_clue_layout_and_missing_data(tmp_path):
    for name in ("train.json", "dev.json", "test.json", "test1.0.json"):
        write(tmp_path / "tnews_public" / name, "")
    assert clue.clue_splits("tnews", tmp_path) == {
        split: (tmp_path / "tnews_public" / f"{split}.json",) for split in ("train", "dev", "test")}
    assert clue.clue_splits("tnews", tmp_path / "tnews_public")["dev"] == (
        tmp_path / "tnews_public" / "dev.json",)
    with pytest.raises(MissingDataError, match=r"lacks .*tnews/\{dev\.json,train\.json\}.*"
                                               r"fewclue/tnews/\{dev_few_all\.json"):
        clue.clue_splits("tnews", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="not a FewCLUE task"):
        clue.clue_splits("afqmc", tmp_path, fewclue=True)


def test_fewclue_layout(tmp_path):
    names = ["train_few_all", "dev_few_all", "test_public", "test", "train_0", "dev_0"]
    for name in names:
        write(tmp_path / "fewclue" / "cluewsc" / f"{name}.json", "")
    got = clue.clue_splits("wsc", tmp_path)
    folder = tmp_path / "fewclue" / "cluewsc"
    assert got == {"train": (folder / "train_few_all.json",), "dev": (folder / "dev_few_all.json",),
                   "test": (folder / "test_public.json",), "submit": (folder / "test.json",),
                   "train_0": (folder / "train_0.json",), "dev_0": (folder / "dev_0.json",)}
    write(tmp_path / "cluewsc2020" / "dev.json", "")
    assert clue.clue_splits("wsc", tmp_path) == {"dev": (tmp_path / "cluewsc2020" / "dev.json",)}
    assert clue.clue_splits("wsc", tmp_path, fewclue=True) == got


@pytest.mark.parametrize("task, folder, files, expected", [
    ("cmrc2018", "cmrc2018", ["cmrc2018_trial.json", "cmrc2018_dev.json"],
     {"train": ["cmrc2018_trial.json"], "dev": ["cmrc2018_dev.json"]}),
    ("c3", "c3", ["c3-d-dev.json", "c3-m-dev.json"], {"dev": ["c3-d-dev.json", "c3-m-dev.json"]}),
    ("c3", "c3_public", ["d-train.json", "m-train.json", "d-dev.json", "m-dev.json",
                         "test1.0.json", "test1.1.json"],
     {"train": ["d-train.json", "m-train.json"], "dev": ["d-dev.json", "m-dev.json"],
      "test": ["test1.1.json"]}),
    ("chid", "chid_public", ["train.json", "train_answer.json", "dev.json", "test1.1.json"],
     {"train": ["train.json"], "dev": ["dev.json"], "test": ["test1.1.json"]}),
    ("cluener", "cluener2020", ["train.json", "dev.json"],
     {"train": ["train.json"], "dev": ["dev.json"]}),
    ("ocnli", "ocnli", ["train.3k.json", "dev.json"],
     {"train": ["train.3k.json"], "dev": ["dev.json"]}),
    ("afqmc", "csts/AFQMC", ["train.txt", "dev.txt"], {"train": ["train.txt"], "dev": ["dev.txt"]}),
    ("cmnli", "csts/Chinese-MNLI", ["dev.txt"], {"dev": ["dev.txt"]}),
])
def test_real_folder_layouts(tmp_path, task, folder, files, expected):
    for name in files:
        write(tmp_path / folder / name, "")
    assert clue.clue_splits(task, tmp_path) == {
        split: tuple(tmp_path / folder / n for n in names) for split, names in expected.items()}


# --------------------------------------------------------------------------- submissions

LABELS = {"iflytek": {0: "99", 1: "70"}, "tnews": {"0": "101", "1": "116"},
          "afqmc": {0: "0", 1: "1"}, "cmnli": {0: "neutral", 1: "entailment"},
          "ocnli": {0: "contradiction"}, "wsc": {49: "false", 50: "true"},
          "csl": {2415: "0", 2565: "1"}, "bustm": {3000: "1"}, "eprstmt": {111: "Negative"},
          "csldcp": {0: "力学", 1: "交通运输工程"}}
OTHER = {"cmrc2018": ({"TEST_0_QUERY_0": "光荣和ω-force"}, {}),
         "c3": ({0: 2, 1: 0}, {}), "chid": ({"#idiom623377#": 3, "#idiom623378#": 0}, {})}


@pytest.mark.parametrize("task, name", sorted(cs.CLUE_SUBMISSION_FILES.items()))
def test_clue_submission_round_trip(tmp_path, task, name):
    if task == "cluener":
        spans = (("organization", 0, 8), ("position", 8, 11), ("position", 12, 15),
                 ("name", 15, 18))
        predictions = {0: ("北京勘察设计协会副会长兼秘书长周荫如", spans), 1: ("无", ())}
        expected = {k: spans for k, (_, spans) in predictions.items()}
    else:
        predictions = LABELS.get(task) or OTHER[task][0]
        expected = predictions
    path = cs.write_submission(task, predictions, tmp_path / "out")
    assert path == tmp_path / "out" / name
    assert cs.read_submission(task, tmp_path / "out") == expected
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left


def test_submission_layouts_on_disk(tmp_path):
    path = cs.write_submission("cluener", {7: clue.NerExample(7, "浙商银行叶老桂", (
        ("company", 0, 4), ("name", 4, 7)))}, tmp_path)
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "id": 7, "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}}}
    assert "浙商银行" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    path = cs.write_submission("tnews", {"0": 1, "1": "116"}, tmp_path)
    assert path.read_text(encoding="utf-8") == ('{"id": "0", "label": "101"}\n'
                                                '{"id": "1", "label": "116"}\n')
    path = cs.write_submission("chid", {"#idiom623377#": 3}, tmp_path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"#idiom623377#": 3}
    path = cs.write_submission("cmrc2018", {"Q": "答案"}, tmp_path / "mine.json")
    assert path.name == "mine.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"Q": "答案"}


@pytest.mark.parametrize("task", sorted(clue.FEWCLUE_NAMES))
@pytest.mark.parametrize("run", [None, 0, "all"])
def test_fewclue_submission_round_trip(tmp_path, task, run):
    predictions = {3000: 0, 3001: 6} if task == "chid" else LABELS[task]
    path = cs.write_submission(task, predictions, tmp_path, fewclue=True, fewclue_run=run)
    stem = cs.FEWCLUE_SUBMISSION_NAMES[task] + "_predict"
    assert path.name == (f"{stem}.json" if run is None else f"{stem}_{run}.json")
    assert cs.read_submission(task, path, fewclue=True) == predictions
    if task == "chid":
        assert path.read_text(encoding="utf-8").startswith('{"id": 3000, "answer": 0}\n')


def test_submission_names():
    assert cs.submission_name("cluewsc", fewclue=True, fewclue_run=4) == "cluewscf_predict_4.json"
    assert cs.submission_name("bustm", fewclue=True) == "bustm_predict.json"
    with pytest.raises(ValueError, match="FewCLUE task only"):
        cs.submission_name("bustm")
    with pytest.raises(ValueError, match="not a FewCLUE task"):
        cs.submission_name("c3", fewclue=True)
    with pytest.raises(ValueError, match="fewclue_run must be one of"):
        cs.submission_name("tnews", fewclue=True, fewclue_run=5)


@pytest.mark.parametrize("task, predictions, message", [
    ("tnews", {0: "105"}, r"tnews: expected the prediction for id 0 to be one of the 15 labels"),
    ("iflytek", {0: 119}, r"or an index in \[0, 119\), found 119"),
    ("c3", {0: -1}, r"c3: expected the prediction for 0 to be a choice index"),
    ("chid", {0: 1}, r"expected CLUE ChID predictions keyed by blank"),
    ("cmrc2018", {"Q": 3}, r"cmrc2018: expected answer strings"),
    ("cluener", {0: ("浙商", (("bank", 0, 2),))}, r"cluener: expected spans"),
    ("wsc", {True: "true"}, r"expected prediction ids to be int or str"),
])
def test_bad_predictions(tmp_path, task, predictions, message):
    with pytest.raises(ValueError, match=message):
        cs.write_submission(task, predictions, tmp_path)
    assert not list(tmp_path.iterdir())


def test_read_submission_names_bad_line(tmp_path):
    write(tmp_path / "afqmc_predict.json", jl({"id": 0, "label": "1"}, {"id": 1, "label": "0"},
                                              {"id": 2, "label": "yes"}))
    with pytest.raises(ValueError, match=r"afqmc_predict\.json:3: expected field 'label' to be "
                                         r"one of the 2 afqmc labels \['0', '1'\], found 'yes'"):
        cs.read_submission("afqmc", tmp_path)
    write(tmp_path / "afqmc_predict.json", jl({"id": 0, "label": "1"}, {"id": 0, "label": "0"}))
    with pytest.raises(ValueError, match=r"afqmc_predict\.json:2: expected each id once"):
        cs.read_submission("afqmc", tmp_path)


# --------------------------------------------------------------------------- real data

# Counts from the data folder's README (FewCLUE: the files' line counts); for the NLI sets the
# rows without a gold label ("-") are skipped: kept + skipped == the file's rows.
REAL = {
    ("cluener", None): {"train": 10748, "dev": 1343},
    ("ocnli", None): {"train": 3000, "dev": 3000},
    ("cmrc2018", None): {"train": 1002, "dev": 3219},
    ("c3", None): {"dev": 1825 + 1991},
    ("afqmc", None): {"train": 34334, "dev": 4316},
    ("cmnli", None): {"dev": 12241},
    ("bustm", True): {"train": 160, "dev": 160, "test": 1772},
    ("chid", True): {"train": 202, "dev": 202, "test": 2002},
    ("wsc", True): {"train": 160, "dev": 159, "test": 976},
    ("csl", True): {"train": 160, "dev": 160, "test": 2838},
    ("csldcp", True): {"train": 2036, "dev": 2068, "test": 1784},
    ("eprstmt", True): {"train": 160, "dev": 160, "test": 610},
    ("iflytek", True): {"train": 3024, "dev": 1373, "test": 1749},
    ("ocnli", True): {"train": 160, "dev": 160, "test": 2520},
    ("tnews", True): {"train": 1185, "dev": 1098, "test": 2010},
}


@pytest.mark.parametrize("task, fewclue", sorted(REAL, key=str))
def test_real_data_counts(data_dir, task, fewclue):
    splits = clue.clue_splits(task, data_dir, fewclue=fewclue)
    assert set(splits) == set(REAL[task, fewclue])
    for split, files in splits.items():
        records = clue.read_clue(task, files)
        assert len(records) + records.skipped == REAL[task, fewclue][split], (split, files)
        if split != "submit":
            assert all(getattr(r, "label", 0) is not None for r in records)


def test_real_data_details(data_dir):
    ocnli = clue.read_clue("ocnli", clue.clue_splits("ocnli", data_dir)["dev"])
    assert (len(ocnli), ocnli.skipped) == (2950, 50)
    c3 = clue.read_clue("c3", clue.clue_splits("c3", data_dir)["dev"])
    assert len({q.id for q in c3}) == len(c3) == 3816
    ner = clue.read_clue("cluener", clue.clue_splits("cluener", data_dir)["train"])
    assert {kind for e in ner for kind, _, _ in e.spans} == set(clue.CLUENER_TYPES)
    chid = clue.read_clue("chid", clue.clue_splits("chid", data_dir)["test"])
    assert all(e.blanks == ("#idiom#",) and len(e.candidates) == 7 for e in chid)
