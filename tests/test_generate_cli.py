"""`jaxformer generate` on a tiny masked-LM folder written to tmp: one output line per input line,
``--beam 1`` equal to the beam search with one beam, and bad arguments as one-line errors."""

import numpy as np
import pytest
from flax import nnx

from jaxformer.cli import main
from jaxformer.io import WordPieceTokenizer
from jaxformer.models.config import EncoderConfig
from jaxformer.models.encoder import Encoder
from jaxformer.models.lm import MaskedLM
from jaxformer.models.pretrained_lm import load_masked_lm, save_masked_lm

CHARS = "我爱自然语言处理今天气很好生成模型关键词摘要问题答案"
SOURCES = ["我爱自然语言处理", "今天天气很好", "生成模型", "关键词摘要问题答案很好", "好"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 1-block MLM with a tied head and its char vocabulary (max 64 positions)."""
    root = tmp_path_factory.mktemp("gen")
    vocab = root / "vocab"
    vocab.mkdir()
    lines = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "；"] + list(dict.fromkeys(CHARS))
    (vocab / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = WordPieceTokenizer.from_directory(vocab)
    cfg = EncoderConfig.tiny(vocab_size=tok.vocab_size, num_layers=1, use_pooler=False,
                             max_position_embeddings=64)
    model = MaskedLM(Encoder(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
    # A slightly stronger [SEP] so that some hypotheses end before max_length.
    sep = tok.sep_id
    model.head.bias[...] = model.head.bias[...].at[sep].set(0.05)
    return save_masked_lm(model, root / "model", tokenizer=tok)


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    return path


def _generate(capsys, *args):
    rc = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_one_line_per_source(model_dir, input_file, tmp_path, capsys):
    rc, out, err = _generate(capsys, "--model", model_dir, "--input", input_file,
                             "--max-length", 6, "--max-source", 16, "--batch-size", 2)
    assert rc == 0, err
    assert len(out.split("\n")) == len(SOURCES) + 1 and out.endswith("\n")
    target = tmp_path / "out.txt"
    rc, out2, err = _generate(capsys, "--model", model_dir, "--input", input_file,
                              "--max-length", 6, "--max-source", 16, "--batch-size", 3,
                              "--output", target)
    assert rc == 0 and out2 == "", err
    # The batch size changes nothing (the last batch is padded with copies).
    assert target.read_text(encoding="utf-8") == out
    for line in out.splitlines():
        assert " " not in line  # CJK characters joined
        assert set(line) <= set(CHARS + "；")


def test_beam_one_equals_the_one_beam_search(model_dir, input_file, capsys):
    from jaxformer.cli.generate import one_line
    from jaxformer.io import load_tokenizer
    from jaxformer.models.unilm_decode import decode
    from jaxformer.tasks.seq2seq import decode_config

    rc, out, err = _generate(capsys, "--model", model_dir, "--input", input_file, "--beam", 1,
                             "--max-length", 7, "--max-source", 16)
    assert rc == 0, err
    tok, model = load_tokenizer(model_dir), load_masked_lm(model_dir)
    enc = tok.encode_batch(SOURCES, max_length=16, padding="max_length")
    res = decode(model, enc["input_ids"], enc["attention_mask"],
                 config=decode_config(tok, max_length=7, beam_size=1), greedy=False)
    n = np.asarray(res.lengths[:, 0]) - np.asarray(res.finished[:, 0])
    expect = [one_line(tok.decode(np.asarray(res.tokens[r, 0, :n[r]])))
              for r in range(len(SOURCES))]
    assert out.splitlines() == expect
    assert any(expect)
    # A wider beam runs and keeps the line count.
    rc, out3, err = _generate(capsys, "--model", model_dir, "--input", input_file, "--beam", 3,
                              "--max-length", 7, "--max-source", 16, "--length-penalty", 0.5)
    assert rc == 0 and len(out3.splitlines()) == len(SOURCES), err


@pytest.mark.parametrize("case, match", [
    ("beam0", "--beam: expected an int >= 1, got 0"),
    ("maxlen", "--max-length: expected an int >= 1"),
    ("alpha", "--length-penalty: expected a finite number >= 0"),
    ("missing", "no such file"),
    ("empty", "has no sentences"),
    ("blank", "in.txt:2: blank line"),
    ("utf8", "in.txt:3: not valid UTF-8"),
    ("nomodel", "no config.json"),
    ("positions", "max_position_embeddings=64, got 60 + 8"),
])
def test_bad_arguments_are_one_line(case, match, model_dir, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("我爱\n生成\n", encoding="utf-8")
    args = {"--model": model_dir, "--input": path, "--max-length": 8}
    if case == "beam0":
        args["--beam"] = 0
    elif case == "maxlen":
        args["--max-length"] = 0
    elif case == "alpha":
        args["--length-penalty"] = -1
    elif case == "missing":
        args["--input"] = tmp_path / "nope.txt"
    elif case == "empty":
        path.write_text("", encoding="utf-8")
    elif case == "blank":
        path.write_text("我爱\n \n生成\n", encoding="utf-8")
    elif case == "utf8":
        path.write_bytes("我爱\n生成\n".encode() + b"\xff\xfe\n")
    elif case == "nomodel":
        args["--model"] = tmp_path
    elif case == "positions":
        args["--max-source"] = 60
    rc, out, err = _generate(capsys, *[x for kv in args.items() for x in kv])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jaxformer generate: error: "), err
    assert match in err, err


def test_decode_config_of_the_tokenizer(model_dir):
    from jaxformer.io import load_tokenizer
    from jaxformer.tasks.seq2seq import decode_config

    tok = load_tokenizer(model_dir)
    cfg = decode_config(tok, max_length=5, beam_size=2, length_penalty=0.5)
    assert (cfg.eos_id, cfg.pad_id, cfg.beam_size, cfg.length_penalty) == (3, 0, 2, 0.5)
    assert cfg.suppress_ids == (0, 1, 2, 4)  # [PAD] [UNK] [CLS] [MASK]; never [SEP]
