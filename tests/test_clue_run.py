"""`jaxformer clue` / `run_clue` end to end: fixtures in the official CLUE and FewCLUE layouts with
a tiny encoder, resume, bad input; then the real task folders (``JAXFORMER_DATA``) with
``--max-steps``."""

import json

import numpy as np
import pytest
from flax import nnx

from jaxformer.cli import main
from jaxformer.io.clue_submit import read_submission
from jaxformer.io.clue_tasks import CLUE_LABELS
from jaxformer.tasks.clue.config import ClueConfig
from jaxformer.tasks.clue.layouts import encode_sentences, mark_wsc
from jaxformer.tasks.clue.runner import run_clue

pytestmark = pytest.mark.usefixtures("fast_compile")

CHARS = "孩子跟谁睡就是的深山发现紫薇树桩村民看了无可奈何为什么要出现一个身穿军装高大男人"


def tiny_model(tmp_path, vocab_file=None):
    from jaxformer.io import WordPieceTokenizer
    from jaxformer.models.config import EncoderConfig
    from jaxformer.models.encoder import Encoder
    from jaxformer.models.pretrained import save_pretrained

    vocab = tmp_path / "vocab"
    vocab.mkdir()
    if vocab_file is None:
        lines = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "_", "[", "]",
                 "；"] + sorted(set(CHARS))
        (vocab / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        import shutil

        shutil.copy(vocab_file, vocab / "vocab.txt")
    tok = WordPieceTokenizer.from_directory(vocab)
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, num_layers=1, use_pooler=False,
                             max_position_embeddings=128)
    model_dir = tmp_path / "model"
    save_pretrained(Encoder(cfg, rngs=nnx.Rngs(0)), model_dir, tokenizer=tok)
    return model_dir


def write_lines(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")


def tnews_fewclue(folder, n=24):
    rng = np.random.default_rng(0)
    codes = [int(c) for c in CLUE_LABELS["tnews"]]
    for name in ("train_few_all", "dev_few_all", "test_public"):
        write_lines(folder / f"{name}.json", [
            {"label": codes[i % 3], "label_desc": "x", "sentence": "".join(
                rng.choice(list(CHARS), 12)), "keywords": "", "id": i} for i in range(n)])


def test_mark_wsc_and_sentence_layouts(tmp_path):
    # Span 1 as _..._, span 2 (the pronoun) as [...], whichever comes first.
    assert mark_wsc("小明把书给了他", ("小明", 0), ("他", 6)) == "_小明_把书给了[他]"
    assert mark_wsc("他说小明来了", ("小明", 2), ("他", 0)) == "[他]说_小明_来了"
    assert mark_wsc("ab", ("a", 0), ("b", 1)) == "_a_[b]"
    with pytest.raises(ValueError, match=r"span2 \('她' at 6\) does not match the text: "
                                         r"expected '她', found '他'"):
        mark_wsc("小明把书给了他", ("小明", 0), ("她", 6))
    from jaxformer.io import WordPieceTokenizer
    from jaxformer.io.clue import CslExample, PairExample

    model_dir = tiny_model(tmp_path)
    tok = WordPieceTokenizer.from_directory(model_dir)
    pairs = [PairExample(0, "孩子", "深山", 1), PairExample(1, "是的", "村民", None)]
    zero = encode_sentences(pairs, tok, max_len=16)
    both = encode_sentences(pairs, tok, max_len=16, segment_ids="pair")
    assert not zero["token_type_ids"].any() and both["token_type_ids"][0].tolist() == \
        [0, 0, 0, 0, 1, 1, 1]  # [CLS] 孩 子 [SEP] 深 山 [SEP]
    assert zero["labels"].tolist() == [1, -1]
    np.testing.assert_array_equal(zero["input_ids"], both["input_ids"])
    csl = encode_sentences([CslExample(0, "深山", ("孩子", "村民"), 0)], tok, max_len=16)
    assert tok.decode(csl["input_ids"][0]).replace(" ", "") == "孩子；村民深山"


def test_clue_config_presets_and_errors():
    c3 = ClueConfig.preset("c3")
    # The post's C3 row: maxlen 512, batch 4 per pass, accumulation x4 -> 16 per update.
    assert (c3.max_len, c3.batch_size, c3.accumulate, c3.micro_batch, c3.epochs) == \
        (512, 16, 4, 4, 10)
    assert ClueConfig.preset("cluewsc").task == "wsc" and ClueConfig.preset("wsc").epochs == 30
    with pytest.raises(ValueError, match=r"ClueConfig.batch_size must be a multiple of "
                                         r"accumulate=4, got 6"):
        ClueConfig.preset("c3", batch_size=6)
    with pytest.raises(ValueError, match=r"ClueConfig.segment_ids must be one of"):
        ClueConfig.preset("afqmc", segment_ids="one")
    with pytest.raises(ValueError, match=r"task must be one of .* got 'glue'"):
        ClueConfig.preset("glue")


def test_cli_runs_fewclue_tnews_writes_metrics_and_submission_and_resumes(tmp_path, capsys):
    model_dir = tiny_model(tmp_path)
    data = tmp_path / "tnews"
    tnews_fewclue(data)
    out = tmp_path / "out"
    args = ["clue", "tnews", "--model", str(model_dir), "--data-dir", str(data), "--out",
            str(out), "--max-steps", "3", "--batch-size", "8", "--max-len", "16",
            "--no-progress"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "metrics.json").read_text("utf-8"))
    assert printed["task"] == "tnews" and report["steps"] == 3
    assert 0 <= report["dev"]["accuracy"] <= 100 and 0 <= report["test"]["accuracy"] <= 100
    # FewCLUE layout -> FewCLUE's file name; one line per test example, labels as codes.
    sub = out / report["submission"]["file"]
    assert sub.name.startswith("tnewsf_predict") and report["submission"]["from"] == "test"
    back = read_submission("tnews", sub, fewclue=True)
    assert len(back) == 24 and set(back.values()) <= set(CLUE_LABELS["tnews"])
    # The recomputed accuracy from the submission file matches the reported one.
    gold = {i: CLUE_LABELS["tnews"][i % 3] for i in range(24)}
    acc = 100 * np.mean([back[k] == gold[int(k)] for k in back])
    assert acc == pytest.approx(report["test"]["accuracy"])
    # A rerun finds the finished run and retrains nothing: the metrics file is the same.
    before = (out / "metrics.jsonl").read_text("utf-8")
    assert main(args) == 0
    assert (out / "metrics.jsonl").read_text("utf-8") == before
    again = json.loads((out / "metrics.json").read_text("utf-8"))
    assert again["test"] == report["test"] and again["dev"] == report["dev"]


def test_clue_layout_without_test_submits_dev(tmp_path):
    model_dir = tiny_model(tmp_path)
    folder = tmp_path / "cluewsc"
    text = "为什么要出现一个身穿军装的高大男人"
    rows = [{"target": {"span1_index": 8, "span1_text": "身穿", "span2_index": 15,
                        "span2_text": "男人"}, "idx": i, "label": ["true", "false"][i % 2],
             "text": text} for i in range(10)]
    write_lines(folder / "train.json", rows)
    write_lines(folder / "dev.json", rows[:5])
    report = run_clue(ClueConfig.preset("wsc", batch_size=4, max_len=32), model_dir=model_dir,
                      data_dir=folder, out_dir=tmp_path / "out", max_steps=2, progress=False)
    assert report["submission"] == {"file": "cluewsc11_predict.json", "from": "dev",
                                    "examples": 5}
    assert "test" not in report and 0 <= report["dev"]["accuracy"] <= 100


def test_cli_errors_are_one_line(tmp_path, capsys):
    model_dir = tiny_model(tmp_path)
    assert main(["clue", "glue", "--model", str(model_dir), "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "task must be one of" in capsys.readouterr().err
    assert main(["clue", "tnews", "--model", str(model_dir), "--data-dir",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxformer clue: error:") and "nowhere" in err
    few = tmp_path / "tnews"
    tnews_fewclue(few, n=4)
    assert main(["clue", "tnews", "--model", str(model_dir), "--data-dir", str(few),
                 "--out", str(tmp_path / "o")]) == 2
    assert "the train split encodes to 4 examples, fewer than batch_size=32" in capsys.readouterr().err


# One folder per layout and file format (iflytek and bustm share tnews' and afqmc's).
SENTENCE_FOLDERS = [("tnews", "fewclue/tnews"), ("cluewsc", "fewclue/cluewsc"),
                    ("csl", "fewclue/csl"), ("ocnli", "ocnli"), ("afqmc", "csts/AFQMC")]


@pytest.mark.parametrize("task, folder", SENTENCE_FOLDERS)
def test_real_folders_run_with_max_steps(data_dir, tmp_path, task, folder):
    model_dir = tiny_model(tmp_path, data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    report = run_clue(ClueConfig.preset(task, batch_size=8, max_len=32), model_dir=model_dir,
                      data_dir=data_dir / folder, out_dir=tmp_path / "out", max_steps=2,
                      progress=False)
    assert 0 <= report["dev"]["accuracy"] <= 100
    assert (tmp_path / "out" / report["submission"]["file"]).is_file()


# The other layout families on their real folders: C3 (dev only: an 80/20 hold-out), FewCLUE
# CHID, CMRC2018 (trial trains, dev selects) and CLUENER, each cut to its first records.
OTHER_FOLDERS = [("c3", "c3", {"max_len": 64}), ("chid", "fewclue/chid", {"max_len": 32}),
                 ("cmrc2018", "cmrc2018", {"max_len": 96, "doc_stride": 48}),
                 ("cluener", "cluener2020", {"max_len": 48})]


@pytest.mark.parametrize("task, folder, changes", OTHER_FOLDERS)
def test_real_folders_of_every_head_run_through_the_cli(data_dir, tmp_path, task, folder,
                                                        changes, capsys):
    model_dir = tiny_model(tmp_path, data_dir / "vocab" / "bert-base-chinese-vocab.txt")
    out = tmp_path / "out"
    args = ["clue", task, "--model", str(model_dir), "--data-dir", str(data_dir / folder),
            "--out", str(out), "--max-steps", "2", "--limit", "24", "--batch-size", "4",
            "--no-progress"] + [a for k, v in changes.items()
                                for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "metrics.json").read_text("utf-8"))
    assert printed["task"] == report["task"] == task and report["steps"] == 2
    metric = {"c3": "accuracy", "chid": "accuracy", "cmrc2018": "f1", "cluener": "f1"}[task]
    assert 0 <= report["dev"][metric] <= 100
    assert (report["holdout"] is not None) == (task == "c3")
    sub = out / report["submission"]["file"]
    assert sub.is_file() and report["submission"]["examples"] > 0
    assert len(read_submission(task, sub, fewclue=task == "chid")) > 0
