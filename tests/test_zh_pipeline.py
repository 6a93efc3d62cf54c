"""The Chinese-encoder pipeline end to end on the real data, at toy sizes: prepared ids, char
BERT -> continued char BERT and WoBERT (cached, resumable, HF folders that `load_pretrained`,
`load_masked_lm` and ``jaxformer embed`` read), goal P7's throughput rows and claim R6's runs.

The real runs (an hour-sized recipe) live in `benchmarks/`; these check the plumbing, the cache
and the invariants, not the quality of a 1-layer model trained for 6 steps.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxformer.models.pretrained import load_pretrained
from jaxformer.models.pretrained_lm import load_masked_lm

TINY_PREP = dict(limit_chunks=48, max_heldout=12, p7_texts=4, limit_examples=40,
                 word_starts=True)


# XLA's optimisation passes dominate these tests' CPU compile time (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def prep(data_dir, tmp_path_factory):
    from benchmarks.zh_prepare import PrepareConfig, prepared

    root = tmp_path_factory.mktemp("cache")
    path, hit = prepared(data_dir, PrepareConfig(**TINY_PREP), root=root)
    assert not hit
    return path, root


def test_prepared_folder(prep, data_dir):
    from benchmarks.zh_prepare import PrepareConfig, load_npz, prepared

    path, root = prep
    report = json.loads((path / "report.json").read_text("utf-8"))
    vocab = report["wobert_vocab"]
    assert vocab["final"] == vocab["kept"] + 20000 == len(
        (path / "wobert_tokenizer" / "vocab.txt").read_text("utf-8").split("\n")) - 1
    char = load_npz(path, "corpus_char")
    assert char["train"].shape == (48, 128) and char["train"].dtype == np.uint16
    # Every row is [CLS] ... [SEP] then padding (id 0): a contiguous prefix of real tokens.
    real = char["train"] != 0
    assert (real[:, 0]).all() and not (np.diff(real.astype(int), axis=1) > 0).any()
    # Same texts, fewer tokens with words (P7's premise), at every length.
    for length in ("128", "256", "512"):
        tokens = report["p7"][length]
        assert tokens["word"] < tokens["char"] <= int(length) + 2
    r6 = load_npz(path, "r6_tnews")
    assert r6["train_char"].shape == (40, 64) and r6["train_labels"].shape == (40,)
    assert 0 <= r6["train_labels"].min() and r6["train_labels"].max() < report["r6"]["tnews"][
        "num_labels"]
    # Equal settings: a cache hit.
    again, hit = prepared(data_dir, PrepareConfig(**TINY_PREP), root=root)
    assert hit and again == path


@pytest.fixture(scope="module")
def models(prep, tmp_path_factory):
    """The tiny recipe, trained through a crash: the first build dies after training, before
    its export; the rerun must resume from the run folder's last checkpoint."""
    from benchmarks import pretrain_zh

    path, _ = prep
    root = tmp_path_factory.mktemp("models")
    cfg = pretrain_zh.PRESETS["tiny"]
    calls = []
    real_export = pretrain_zh._export

    def dying_export(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed after training, before export")
        return real_export(*args, **kwargs)

    pretrain_zh._export = dying_export
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain_zh.pretrain_all(path, cfg, root=root, progress=False)
        crashed_entries = list((root / "char-bert").iterdir())
        out = pretrain_zh.pretrain_all(path, cfg, root=root, progress=False)
    finally:
        pretrain_zh._export = real_export
    return root, out, crashed_entries


def test_pretrain_resumes_after_a_crash(models):
    from benchmarks.pretrain_zh import PRESETS

    _, out, crashed_entries = models
    assert crashed_entries == []  # the killed build left no (half) cache entry
    assert out["char"]["resumed_from"] == PRESETS["tiny"].steps  # restored, not retrained
    assert out["char_continued"]["resumed_from"] is None


def test_pretrain_stages_cache_and_formats(prep, models, tmp_path):
    from benchmarks.pretrain_zh import PRESETS, pretrain_all
    from jaxformer.cli import main as cli

    path, _ = prep
    root, first, _ = models
    for stage in first.values():
        assert np.isfinite(stage["heldout"]["loss"]) and stage["steps"] >= 1
    assert first["wobert"]["vocab_transfer"]["averaged"] > 10000  # the new words
    again = pretrain_all(path, PRESETS["tiny"], root=root, progress=False)
    assert [again[s]["hit"] for s in again] == [True] * 3
    assert again["wobert"]["heldout"] == first["wobert"]["heldout"]
    char_only = pretrain_all(path, PRESETS["tiny"], root=root, progress=False, char_only=True)
    assert list(char_only) == ["char"] and char_only["char"]["hit"]

    word_dir = first["wobert"]["path"]
    lm = load_masked_lm(word_dir)
    transfer = first["wobert"]["vocab_transfer"]
    assert lm.encoder.config.vocab_size == sum(transfer.values())
    encoder = load_pretrained(word_dir)
    np.testing.assert_array_equal(np.asarray(encoder.embed.word.embedding[...]),
                                  np.asarray(lm.encoder.embed.word.embedding[...]))
    sentences = tmp_path / "s.txt"
    sentences.write_text("今天天气不错，我们去公园散步吧\n自然语言处理\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert cli(["embed", "--model", word_dir, "--input", str(sentences), "--out", str(out),
                "--pooling", "mean"]) == 0
    assert np.load(out).shape == (2, lm.encoder.config.hidden_size)

    # A corrupt entry (a truncated weight file) is rebuilt whole, never half-read.
    weights = Path(first["char_continued"]["path"]) / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(100)
    rebuilt = pretrain_all(path, PRESETS["tiny"], root=root, progress=False)
    assert rebuilt["char_continued"]["hit"] is False
    assert rebuilt["char"]["hit"] is True and rebuilt["wobert"]["hit"] is True
    assert load_masked_lm(rebuilt["char_continued"]["path"]).encoder.config.vocab_size == 21128


def test_p7_and_r6_rows(prep, models):
    from benchmarks.bench_wobert import run as p7
    from benchmarks.exp_wobert_r6 import R6Config, run as r6, verdict

    path, _ = prep
    _, trained, _ = models
    rows = p7(path, size="tiny", batch_size=4, precision="fp32", budget_s=0.05, lengths=(128,))
    assert {r["workload"] for r in rows} == {"encode", "train"}
    for r in rows:
        assert r["word_tokens"] < r["char_tokens"] and r["speedup"] > 0
        assert r["char_cps"] == pytest.approx(4 * 128 / (r["char_ms"] / 1e3))
    cfg = R6Config(seeds=(0, 1), limit_train=32, limit_test=16, batch_size=8,
                   epochs=(("thucnews", 1), ("tnews", 1), ("iflytek", 1), ("chnsenticorp", 1)))
    (row,) = r6(path, {"char": Path(trained["char_continued"]["path"]),
                       "word": Path(trained["wobert"]["path"])}, cfg, sets=("tnews",))
    for model in ("char", "word"):
        assert len(row["runs"][model]) == 2
        assert all(0.0 <= r["accuracy"] <= 100.0 for r in row["runs"][model])
    assert row["verdict"] in ("better", "worse", "within noise")
    # verdict's rule on known numbers: a 2-point gap over a 0.1 spread is real, 0.1 is noise.
    assert verdict([50.0, 50.1, 49.9], [52.0, 52.1, 51.9]) == "better"
    assert verdict([50.0, 50.1, 49.9], [50.05, 50.15, 49.95]) == "within noise"
    assert verdict([50.0, 50.1, 49.9], [48.0, 48.1, 47.9]) == "worse"


def test_missing_vocab_is_named(tmp_path):
    from benchmarks.zh_prepare import PrepareConfig, build_prepared

    with pytest.raises(FileNotFoundError, match="vocab/bert-base-chinese-vocab.txt"):
        build_prepared(tmp_path, PrepareConfig(), tmp_path / "out")


def test_r6_cut_keeps_sep():
    from benchmarks.exp_wobert_r6 import cut

    ids = np.array([[101, 5, 6, 7, 102, 0], [101, 5, 6, 102, 0, 0], [101, 102, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cut(ids, 4, 102), [[101, 5, 6, 102], [101, 5, 6, 102],
                                                     [101, 102, 0, 0]])


def test_whole_word_masking_on_jieba_words(prep):
    import jax
    import jax.numpy as jnp

    from benchmarks.pretrain_zh import as_data, encoder_config, mlm_task, vocab_of
    from benchmarks.zh_prepare import load_npz
    from jaxformer.train.lm import word_first_index

    path, _ = prep
    corpus = load_npz(path, "corpus_char")
    data = as_data(corpus, "train", whole_word=True)
    starts, ids = data["word_starts"], data["input_ids"]
    assert starts.shape == ids.shape and set(np.unique(starts)) <= {0, 1}
    # Specials and padding never start a word; Chinese words mostly span 1-4 characters.
    assert not starts[ids == 0].any() and not starts[:, 0].any()
    assert 0.4 < starts.sum() / (ids != 0).sum() < 0.95
    vocab = vocab_of(path / "char_tokenizer")
    task = mlm_task(encoder_config("tiny", len(vocab), 128), vocab, whole_word=True)
    batch = {k: jnp.asarray(v[:8]) for k, v in data.items()}
    _, positions, _, weights = task.corrupt(batch, key=jax.random.key(0))
    selected = np.zeros(ids[:8].shape, bool)
    np.put_along_axis(selected, np.asarray(positions), np.asarray(weights) > 0, axis=1)
    maskable = (ids[:8] != 0) & ~np.isin(ids[:8], [100, 101, 102])
    after_fixed = np.concatenate([np.ones((8, 1), bool), ~maskable[:, :-1]], axis=1)
    word = np.asarray(word_first_index(jnp.asarray(((starts[:8] > 0) & maskable) | ~maskable
                                                   | after_fixed)))
    assert selected.any()
    for row in range(8):
        for w in np.unique(word[row][maskable[row]]):
            members = selected[row][(word[row] == w) & maskable[row]]
            assert members.all() or not members.any()
    with pytest.raises(ValueError, match="prepare it with `benchmarks.zh_prepare --word-starts`"):
        as_data({"train": ids}, "train", whole_word=True)


def test_sweep_budgets():
    from benchmarks.pretrain_zh import sweep_budgets

    # Steps in the budget: hours * 3600 / (seconds per step), at least one.
    assert sweep_budgets("L2-H256=1.5,L4-H384=4.5", 1.0) == {"L2-H256": 2400, "L4-H384": 800}
    assert sweep_budgets("L2-H256=1.5", 0.25) == {"L2-H256": 600}
    assert sweep_budgets("tiny=1e9", 1.0) == {"tiny": 1}
    with pytest.raises(ValueError, match=r"--sweep: expected SIZE=SECONDS .* got 'L9-H1=2'"):
        sweep_budgets("L9-H1=2", 1.0)
    with pytest.raises(ValueError, match=r"SECONDS > 0, got 'L2-H256=fast'"):
        sweep_budgets("L2-H256=fast", 1.0)
    with pytest.raises(ValueError, match=r"--sweep-hours: expected a number > 0, got 0"):
        sweep_budgets("L2-H256=1.5", 0)
